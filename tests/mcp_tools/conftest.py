"""Fixtures for the MCP tests: the service under gunicorn with two workers, and one with API keys.

Clients are the SDK's own (``mcp.Client`` over ``mcp.client.streamable_http``), talking to
``/mcp`` over real sockets; the programs call the bundled mock LLM.
"""

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.databases import ServerDatabase, server_database
from tests.support import FIXTURES, ROOT, Running, project_config, service
from tests.telemetry.conftest import wait_for
from tests.workers import gunicorn_workers

SERVICE_PROJECT = FIXTURES / "service_project"
# The protocol eras the SDK speaks: the initialize handshake (its newest handshake revision), and
# the 2026-07-28 revision (one self-contained request each, no handshake).
ERAS = ["legacy", "2026-07-28"]
MCP_HOST = "mcp.example.com"  # a public name the keyed server is told about (MCP_ALLOWED_HOSTS)


@pytest.fixture(scope="module")
def workers(
    tmp_path_factory: pytest.TempPathFactory, mock: Running
) -> Iterator[tuple[Running, ServerDatabase]]:
    """Two gunicorn workers, as in production: an MCP client's requests land on either one."""
    tmp = tmp_path_factory.mktemp("mcp-workers")
    config = project_config(SERVICE_PROJECT, tmp, mock.url)
    with gunicorn_workers(tmp, SERVICE_PROJECT, config) as (server, database):
        yield server, database


@pytest.fixture(scope="module")
def keyed(
    tmp_path_factory: pytest.TempPathFactory, mock: Running
) -> Iterator[tuple[Running, ServerDatabase, str]]:
    """API keys on (``server.auth``), one process; EchoSync admits one call at a time. Yields a key."""
    tmp = tmp_path_factory.mktemp("mcp-keyed")
    config = project_config(
        SERVICE_PROJECT,
        tmp,
        mock.url,
        server={"auth": True, "sync_worker_threads": 8, "request_timeout_s": 30},
        programs={"SlowAsync": {"request_timeout_s": 1.5}, "EchoSync": {"max_concurrent": 1}},
    )
    env = {"TELEMETRY_FLUSH_INTERVAL_S": "0.1", "MCP_ALLOWED_HOSTS": MCP_HOST, "API_KEY_MISS_RELOAD_S": "0.2"}
    with server_database(tmp) as database:
        key = manage(database, "apikey", "create", "mcp-client")
        with service(tmp, SERVICE_PROJECT, config, **database.env(), **env) as server:
            yield server, database, key


def manage(database: ServerDatabase, *args: str) -> str:
    env = {**os.environ, **database.env(), "LOG_LEVEL": "WARNING"}
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@asynccontextmanager
async def connect(server: Running, era: str, key: str | None = None) -> AsyncIterator[Client]:
    """The SDK's client on ``/mcp``: ``legacy`` does the initialize handshake, a revision pins it."""
    headers = {"Authorization": f"Bearer {key}"} if key else None
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60))
    async with (
        http,
        Client(streamable_http_client(f"{server.url}/mcp", http_client=http), mode=era) as client,
    ):
        yield client


def rows(database: ServerDatabase, request_ids: list[str]) -> list[dict[str, Any]]:
    """The inference log rows of these request ids."""
    columns = ["request_id", "program", "source", "entry", "status_code", "error_type",
               "prompt_tokens", "completion_tokens", "api_key_name", "worker"]  # fmt: skip
    marks = ", ".join(["%s"] * len(request_ids))
    found = database.query(
        f"SELECT {', '.join(columns)} FROM telemetry_inferencelog WHERE request_id IN ({marks})",
        request_ids,
    )
    return [dict(zip(columns, row, strict=True)) for row in found]


def wait_for_rows(database: ServerDatabase, request_ids: list[str]) -> dict[str, dict[str, Any]]:
    """One row per request id (the writer flushes every 0.1 s), by request id."""
    wait_for(lambda: len(rows(database, request_ids)) >= len(request_ids), 60, "the calls' log rows")
    found = rows(database, request_ids)
    assert sorted(row["request_id"] for row in found) == sorted(request_ids)  # exactly one each
    return {row["request_id"]: row for row in found}
