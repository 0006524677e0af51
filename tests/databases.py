"""Migrated databases for the servers the tests start, and direct SQL access to them.

A server subprocess needs a migrated database of its own: a copy of a migrated SQLite file, or,
when ``DATABASE_URL`` names PostgreSQL, a database created from a migrated template and dropped
afterwards. The migration runs once per test session; each server then gets a fresh copy in
milliseconds.
"""

import atexit
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tests.support import ROOT

_templates: dict[str, str] = {}


def postgres_base_url() -> str | None:
    """The PostgreSQL server the suite runs against, when ``DATABASE_URL`` names one."""
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith(("postgres://", "postgresql://")) else None


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def migrate(url: str) -> None:
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )


@dataclass
class ServerDatabase:
    """A database a server subprocess uses (``url``), readable from the test with plain SQL."""

    url: str

    @property
    def vendor(self) -> str:
        return "postgresql" if self.url.startswith("postgres") else "sqlite"

    @property
    def path(self) -> Path:
        return Path(urlsplit(self.url).path)

    def connect(self) -> Any:
        if self.vendor == "sqlite":
            return sqlite3.connect(self.path, timeout=30)
        import psycopg

        return psycopg.connect(self.url, autocommit=True)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """``sql`` with ``%s`` placeholders, whichever the database."""
        connection = self.connect()
        try:
            if self.vendor == "sqlite":
                return connection.execute(sql.replace("%s", "?"), params).fetchall()
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    def env(self) -> dict[str, str]:
        return {"DATABASE_URL": self.url}

    @contextmanager
    def outage(self) -> Iterator[None]:
        """The database refuses the server's writes until the block ends.

        SQLite: another connection holds the write lock (the server's writes time out as "database
        is locked"). PostgreSQL: the database refuses connections and its sessions are terminated.
        """
        if self.vendor == "sqlite":
            holder = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            holder.execute("BEGIN EXCLUSIVE")
            try:
                yield
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            return
        base, name = self.url, urlsplit(self.url).path.lstrip("/")
        _admin_sql(base, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        _admin_sql(base, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        try:
            yield
        finally:
            _admin_sql(base, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


@contextmanager
def server_database(tmp_dir: Path) -> Iterator[ServerDatabase]:
    """A fresh, migrated database for one server (or one restart sequence)."""
    base = postgres_base_url()
    if base is None:
        path = tmp_dir / f"server-{uuid.uuid4().hex[:8]}.sqlite3"
        shutil.copyfile(_sqlite_template(), path)
        yield ServerDatabase(f"sqlite:///{path}")
        return
    name = f"telemetry_test_{uuid.uuid4().hex[:10]}"
    _admin_sql(base, f'CREATE DATABASE "{name}" TEMPLATE "{_postgres_template(base)}"')
    try:
        yield ServerDatabase(_with_database(base, name))
    finally:
        _admin_sql(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _sqlite_template() -> str:
    if "sqlite" not in _templates:
        directory = tempfile.mkdtemp(prefix="dspy-django-db-")
        atexit.register(shutil.rmtree, directory, True)
        path = Path(directory) / "template.sqlite3"
        migrate(f"sqlite:///{path}")
        # One self-contained file to copy: fold the WAL into it and leave WAL mode.
        with sqlite3.connect(path) as connection:
            connection.execute("PRAGMA journal_mode=DELETE")
        _templates["sqlite"] = str(path)
    return _templates["sqlite"]


def _postgres_template(base: str) -> str:
    if "postgresql" not in _templates:
        name = f"telemetry_template_{uuid.uuid4().hex[:10]}"
        _admin_sql(base, f'CREATE DATABASE "{name}"')
        atexit.register(_admin_sql, base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        migrate(_with_database(base, name))
        _templates["postgresql"] = name
    return _templates["postgresql"]


def _admin_sql(base: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(_with_database(base, "postgres"), autocommit=True) as connection:
        connection.execute(statement)
