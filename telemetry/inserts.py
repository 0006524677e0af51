"""The writer's insert of log rows: ``COPY`` on PostgreSQL, one ``executemany`` on other databases.

``bulk_create`` cost ~110 µs of CPU per row on the writer thread, holding the GIL the request
path needs: a model instance per row, each field prepared through the ORM's generic path, and one
long ``INSERT`` built and parsed per 500 rows. Here the values are those the ORM would send
(each field's own ``get_db_prep_save``, so JSON and datetimes are adapted exactly as it adapts
them; a string, float or boolean that Django's plain field classes would return unchanged is
taken as it is) and go to the database as rows: psycopg's ``COPY ... FROM STDIN`` on PostgreSQL,
one prepared ``INSERT`` run by ``executemany`` on SQLite. Both run on the caller's connection,
inside its transaction.
"""

from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connections, router
from django.db.models import BooleanField, CharField, Field, FloatField, Model, TextField

# Field classes (exactly these, not subclasses) that neither override nor adapt per database what
# Field.get_db_prep_save does: a value of this type, or None, comes out of it unchanged. (Integer
# fields are not among them: PostgreSQL's backend wraps their values in typed psycopg integers.)
UNCHANGED: dict[type[Field], type] = {CharField: str, TextField: str, BooleanField: bool, FloatField: float}


def columns(model: type[Model]) -> list[Field]:
    """Every column the ORM would insert: the concrete fields but an auto-generated key."""
    return [field for field in model._meta.concrete_fields if not field.primary_key or field.has_default()]


def prepared(field: Field, value: Any, connection: Any) -> Any:
    """The value the ORM sends for ``field``: ``get_db_prep_save``, skipped where it changes nothing."""
    kind = UNCHANGED.get(type(field))
    if kind is not None and (value is None or type(value) is kind):
        return value
    return field.get_db_prep_save(value, connection)


def insert_rows(model: type[Model], rows: Iterable[dict[str, Any]]) -> int:
    """Insert rows given as ``{field name: value}``; returns how many.

    A field left out takes its default. Fields' ``pre_save`` hooks (``auto_now``) do not run.
    """
    connection = connections[router.db_for_write(model)]
    fields = columns(model)
    values = [
        tuple(
            prepared(field, row[field.name] if field.name in row else field.get_default(), connection)
            for field in fields
        )
        for row in rows
    ]
    return write_values(model, fields, values)


def write_values(model: type[Model], fields: Sequence[Field], values: Sequence[tuple[Any, ...]]) -> int:
    """Insert rows already prepared for the database (in ``fields`` order); returns how many.

    Also the seeder's path (``telemetry.seeding``): the same ``COPY`` or ``executemany``.
    """
    if not values:
        return 0
    connection = connections[router.db_for_write(model)]
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    names = ", ".join(quote(field.column) for field in fields)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            _copy(cursor, f"COPY {table} ({names}) FROM STDIN", values)
        else:
            placeholders = ", ".join(["%s"] * len(fields))
            cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({placeholders})", values)  # noqa: S608
    return len(values)


def _copy(cursor: Any, statement: str, values: Sequence[tuple[Any, ...]]) -> None:
    """psycopg's COPY on Django's cursor (which hands ``copy`` to the psycopg cursor it wraps)."""
    with cursor.copy(statement) as copy:
        for row in values:
            copy.write_row(row)
