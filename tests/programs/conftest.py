"""Fixtures for the concurrency tests: the telemetry tests' mock and servers, and a server whose
config sets adapters, model capabilities and instance modes (programs in
tests/fixtures/service_project/src/service_programs/modules/concurrency.py)."""

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import yaml

from tests.databases import server_database
from tests.support import FIXTURES, Running, service
from tests.telemetry import conftest as telemetry_fixtures

# The telemetry tests' fixtures, reused: a database per test and a server on it (the mock LLM, `llm`,
# is the session's, from tests/conftest.py).
telemetry_tmp = telemetry_fixtures.telemetry_tmp
telemetry_config = telemetry_fixtures.telemetry_config
database = telemetry_fixtures.database
start_server = telemetry_fixtures.start_server

SERVICE_PROJECT = FIXTURES / "service_project"
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "dspysite/gunicorn.conf.py"]


def concurrency_config_for(directory: Path, mock_url: str) -> Path:
    """The service project's config with the concurrency tests' models and program options."""
    config = yaml.safe_load((SERVICE_PROJECT / "dspy.config.yaml").read_text())
    base = f"{mock_url}/v1"

    def model(name: str) -> dict[str, Any]:
        return {"model": name, "api_base": base, "api_key": "k", "num_retries": 0}

    config["models"] = {
        "default": "mock",
        "registry": {
            "mock": model("openai/mock-model"),  # undeclared, unknown to DSPy: no response_format
            "schema_ok": model("openai/mock-model"),
            "no_schema": model("openai/mock-model"),
            "known": model("openai/gpt-4o-mini"),  # undeclared, DSPy's metadata: JSON schema
        },
    }
    config["declared_models"] = {
        "schema_ok": {"response_schema": True},
        "no_schema": {"response_schema": False},
    }
    config["program_models"] = {}
    config["programs"] = {
        "Structured": {"model": "schema_ok"},  # chat adapter (the default)
        "StructuredJson": {"model": "schema_ok", "adapter": "json"},
        "StructuredJsonObject": {"model": "schema_ok", "adapter": "json", "native_structured_outputs": False},
        "StructuredJsonNoSchema": {"model": "no_schema", "adapter": "json"},
        "StructuredJsonUndeclared": {"model": "mock", "adapter": "json"},
        "StructuredJsonKnown": {"model": "known", "adapter": "json"},
        "StatefulPool": {"instance_mode": "pool", "pool_size": 8},
        "StatefulPerRequest": {"instance_mode": "per_request"},
        "StatefulSyncPool": {"instance_mode": "pool", "pool_size": 8},
    }
    config["server"] = {"sync_worker_threads": 64, "request_timeout_s": 30}
    path = directory / "concurrency.config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def concurrency_config(telemetry_tmp: Path, llm: Running) -> Path:
    return concurrency_config_for(telemetry_tmp, llm.url)


@pytest.fixture(scope="session")
def concurrency_server(telemetry_tmp: Path, concurrency_config: Path) -> Iterator[Running]:
    """One uvicorn process with the concurrency config, shared by the tests that change nothing global."""
    directory = telemetry_tmp / "concurrency-server"
    directory.mkdir()
    with (
        server_database(directory) as db,
        service(directory, SERVICE_PROJECT, concurrency_config, **db.env()) as running,
    ):
        yield running


def post(server: Running, program: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/{program}", json=body, timeout=60)


def reset(mock: Running) -> None:
    httpx.post(f"{mock.url}/stats/reset", timeout=10).raise_for_status()


def received(mock: Running) -> list[dict[str, Any]]:
    """The chat request bodies the mock received since its last reset, oldest first."""
    return httpx.get(f"{mock.url}/requests", timeout=10).json()["requests"]


def concurrently(
    server: Running, requests: list[tuple[str, dict[str, str], dict[str, Any]]], limit: int = 0
) -> list[tuple[int, dict[str, str], Any]]:
    """POST (path, headers, json body) at once (at most ``limit`` in flight; 0: all of them).

    Returns (status, response headers, parsed body) in request order. aiohttp: a cheap client, so
    the server (not the client) is what the two cores spend their time on.
    """

    async def scenario() -> list[tuple[int, dict[str, str], Any]]:
        gate = asyncio.Semaphore(limit or len(requests))
        connector = aiohttp.TCPConnector(limit=limit or len(requests))
        async with aiohttp.ClientSession(server.url, connector=connector) as session:

            async def one(
                path: str, headers: dict[str, str], body: dict[str, Any]
            ) -> tuple[int, dict[str, str], Any]:
                async with gate, session.post(path, json=body, headers=headers) as response:
                    return response.status, dict(response.headers), await response.json(content_type=None)

            return await asyncio.gather(*(one(*request) for request in requests))

    return asyncio.run(scenario())
