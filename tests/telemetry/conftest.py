"""Fixtures for the telemetry tests: the mock LLM, a served project with a priced model, servers."""

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from tests.databases import ServerDatabase, server_database
from tests.support import FIXTURES, Running, service

SERVICE_PROJECT = FIXTURES / "service_project"
T = TypeVar("T")

# openai/gpt-4o-mini in DSPy 3.4.1's bundled price list (USD per token); the mock echoes the model
# name, so DSPy prices those calls. openai/mock-model has no price.
PROMPT_PRICE, COMPLETION_PRICE = 0.15e-6, 0.6e-6


@pytest.fixture(scope="session")
def telemetry_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("telemetry")


@pytest.fixture(scope="session")
def telemetry_config(telemetry_tmp: Path, llm: Running) -> Path:
    """EchoSync on the unpriced mock model, EchoAsync on a priced one; WhereAmI's I/O not captured."""
    config = yaml.safe_load((SERVICE_PROJECT / "dspy.config.yaml").read_text())
    base = f"{llm.url}/v1"
    config["models"]["registry"] = {
        "mock": {"model": "openai/mock-model", "api_base": base, "api_key": "k", "num_retries": 0},
        "priced": {"model": "openai/gpt-4o-mini", "api_base": base, "api_key": "k", "num_retries": 0},
    }
    config["program_models"] = {"EchoSync": "mock", "EchoAsync": "priced"}
    config["programs"] = {
        "SlowAsync": {"request_timeout_s": 1.5, "max_concurrent": 1},
        "WhereAmI": {"capture_io": False},
    }
    config["server"]["sync_worker_threads"] = 256  # 200 concurrent requests are admitted, none refused
    path = telemetry_tmp / "telemetry.config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def database(tmp_path: Path) -> Iterator[ServerDatabase]:
    with server_database(tmp_path) as db:
        yield db


@pytest.fixture
def start_server(tmp_path: Path, telemetry_config: Path) -> Callable[..., Any]:
    """``with start_server(database, **env) as server:`` the service under uvicorn (or ``command``)."""

    @contextmanager
    def start(database: ServerDatabase, command: list[str] | None = None, **env: str) -> Iterator[Running]:
        settings = {"TELEMETRY_FLUSH_INTERVAL_S": "0.2", "TELEMETRY_SHUTDOWN_TIMEOUT_S": "30", **env}
        with service(
            tmp_path, SERVICE_PROJECT, telemetry_config, command, **database.env(), **settings
        ) as running:
            yield running

    return start


def wait_for(condition: Callable[[], T], timeout_s: float = 30.0, what: str = "condition") -> T:
    """Poll ``condition`` until it returns a truthy value; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last: {value!r})")
        time.sleep(0.05)


def graceful_stop(server: Running, timeout_s: float = 60.0) -> bool:
    """SIGTERM (what gunicorn, Kubernetes and systemd send) and wait: the lifespan shutdown flushes.

    True when the process ended by itself: uvicorn re-raises the signal after a clean shutdown
    (exit status -15), gunicorn exits 0.
    """
    server.process.send_signal(signal.SIGTERM)
    return server.process.wait(timeout=timeout_s) in (0, -signal.SIGTERM)


def metrics(server: Running, scope: str = "all") -> dict[str, Any]:
    response = httpx.get(f"{server.url}/api/metrics", params={"scope": scope}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def total_calls(server: Running, scope: str = "all") -> int:
    return sum(entry["call_count"] for entry in metrics(server, scope)["programs"])


def log_rows(database: ServerDatabase) -> int:
    return database.query("SELECT COUNT(*) FROM telemetry_inferencelog")[0][0]
