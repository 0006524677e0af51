"""The writer's insert (COPY / executemany): the same rows and aggregates as the ORM's bulk_create.

Run on SQLite by default and on PostgreSQL with ``DATABASE_URL=postgres://...`` (CI runs both).
"""

from typing import Any

import pytest
from django.db import connection, transaction

from telemetry import storage
from telemetry.inserts import UNCHANGED, insert_rows, prepared
from telemetry.models import TOTAL, InferenceLog, ModelStats, ProgramStats
from telemetry.records import Body, InferenceRecord, to_log_values
from tests.telemetry.factories import make_record

pytestmark = pytest.mark.django_db

COLUMNS = [field for field in InferenceLog._meta.concrete_fields if not field.primary_key]


def varied_records() -> list[InferenceRecord]:
    """Every kind of value a row holds: nulls, errors lists, odd bodies, unicode, keys, big numbers."""
    truncated = make_record(request_id="truncated", finished_at=1_700_000_000.123456)
    truncated.inputs = Body(None, 5_000_000)
    validation = make_record(request_id="validation", status=422, duration_ms=None, prompt=0, completion=0)
    validation.error_detail = [{"loc": ["body", "question"], "msg": "Field required", "type": "missing"}]
    keyed = make_record(request_id="keyed", cost=None, model="openai/gpt-4o-mini")
    keyed.api_key_id, keyed.api_key_name = 2**40, "ci key"
    keyed.source, keyed.entry = "gateway", "PublicGateway"
    return [
        make_record(request_id="plain", prompt=2**31 - 1, completion=0, cost=1.5e-7, duration_ms=12.3456789),
        make_record(request_id="unicode", inputs='{"question": "čaj ☕ \\u00e9?"}'.encode(), status=502),
        make_record(request_id="text", inputs=b"{not json", outputs=b'{"score": NaN}'),
        make_record(request_id="uncaptured", inputs=None, outputs=None),
        truncated,
        validation,
        keyed,
    ]


def stored_rows() -> list[tuple[Any, ...]]:
    """What the database holds, column by column (raw, not through the model), without the id."""
    names = ", ".join(connection.ops.quote_name(field.column) for field in COLUMNS)
    table = connection.ops.quote_name(InferenceLog._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {names} FROM {table} ORDER BY request_id")
        return cursor.fetchall()


def model_rows() -> list[dict[str, Any]]:
    return list(InferenceLog.objects.order_by("request_id").values(*(field.name for field in COLUMNS)))


def written_by_the_orm(records: list[InferenceRecord]) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
    """The reference: the rows ``bulk_create`` writes for the records, then removed again."""
    with transaction.atomic():
        InferenceLog.objects.bulk_create([InferenceLog(**to_log_values(record)) for record in records])
    reference = stored_rows(), model_rows()
    InferenceLog.objects.all().delete()
    return reference


def test_rows_equal_the_orms_raw_and_through_the_model() -> None:
    records = varied_records()
    raw, through_model = written_by_the_orm(records)
    with transaction.atomic():
        assert insert_rows(InferenceLog, [to_log_values(record) for record in records]) == len(records)
    assert stored_rows() == raw
    assert model_rows() == through_model
    assert len(raw) == len(records)


def test_the_writers_batches_equal_the_orms_rows_and_their_aggregates_add_up() -> None:
    records = varied_records()
    raw, _ = written_by_the_orm(records)
    storage.inference_logs_write(records)
    assert stored_rows() == raw
    totals = ProgramStats.objects.get(program="P", period_s=TOTAL)
    logs = InferenceLog.objects.all()
    assert totals.call_count == logs.count()
    assert totals.error_count == logs.filter(success=False).count()
    assert totals.prompt_tokens == sum(log.prompt_tokens for log in logs)
    assert totals.cost_usd == pytest.approx(sum(log.cost_usd or 0 for log in logs))
    models = {stats.model: stats.call_count for stats in ModelStats.objects.filter(period_s=TOTAL)}
    assert models == {"openai/m": 5, "openai/gpt-4o-mini": 1}


def test_values_taken_as_they_are_equal_what_the_orm_prepares() -> None:
    checked = set()
    for record in varied_records():
        for field in COLUMNS:
            value = to_log_values(record)[field.name]
            if type(field) in UNCHANGED:
                expected = field.get_db_prep_save(value, connection)
                assert prepared(field, value, connection) == expected, field.name
                assert type(prepared(field, value, connection)) is type(expected), field.name
                checked.add(type(field))
    assert checked == set(UNCHANGED)  # every shortcut is exercised by the log's own columns


def test_an_empty_batch_writes_nothing() -> None:
    assert insert_rows(InferenceLog, []) == 0
    assert not InferenceLog.objects.exists()
