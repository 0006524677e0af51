"""A server, the mock LLM and ``jobworker`` processes over one real database (SQLite, or
PostgreSQL when DATABASE_URL names it), all real processes on loopback ports."""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from loadtest.servers import production_env, stop
from tests.databases import ServerDatabase, server_database
from tests.support import FIXTURES, ROOT, Running, project_config, service

SERVICE_PROJECT = FIXTURES / "service_project"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the spec's example secret
JOB_ENV = {
    "JOBS_LEASE_S": "3",
    "JOBS_SWEEP_S": "1",
    "JOBS_CHUNK_SIZE": "100",
    "DSPY_WEBHOOK_ALLOW_PRIVATE": "true",
    "DSPY_WEBHOOK_SECRET": WEBHOOK_SECRET,
}


@pytest.fixture(scope="module")
def jobs_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jobs")


@pytest.fixture(scope="module")
def config(jobs_tmp: Path, mock: Running) -> Path:
    return project_config(SERVICE_PROJECT, jobs_tmp, mock.url)


@pytest.fixture(scope="module")
def database(jobs_tmp: Path) -> Iterator[ServerDatabase]:
    with server_database(jobs_tmp) as database:
        yield database


@pytest.fixture(scope="module")
def server(jobs_tmp: Path, config: Path, database: ServerDatabase) -> Iterator[Running]:
    # Program bodies up to 64 KiB: the jobs' uploads have their own, larger limit.
    env = {**database.env(), **JOB_ENV, "MAX_BODY_BYTES": "65536"}
    with service(jobs_tmp, SERVICE_PROJECT, config, **env) as running:
        yield running


def worker_env(config: Path, database: ServerDatabase, **env: str) -> dict[str, str]:
    """What ``manage.py`` needs to serve the test project on the module's database."""
    return {
        **production_env(config),
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "dspysite.settings",
        "DSPY_PROJECT_DIR": str(SERVICE_PROJECT),
        "DSPY_CONFIG": str(config),
        **database.env(),
        **JOB_ENV,
        **env,
    }


@contextmanager
def jobworker(
    tmp: Path,
    config: Path,
    database: ServerDatabase,
    concurrency: int = 8,
    args: tuple[str, ...] = (),
    **env: str,
) -> Iterator[subprocess.Popen]:
    """``manage.py jobworker`` on the same database, up once it printed its id."""
    log_path = tmp / f"jobworker-{time.monotonic_ns()}.log"
    environment = worker_env(config, database, **env)
    argv = [
        sys.executable,
        "manage.py",
        "jobworker",
        "--concurrency",
        str(concurrency),
        "--interval",
        "0.1",
        *args,
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=environment)
    process.log_path = log_path  # type: ignore[attr-defined]
    try:
        wait_for(lambda: "jobworker " in log_path.read_text() or process.poll() is not None, 60)
        assert process.poll() is None, log_path.read_text()[-3000:]
        yield process
    finally:
        stop(process)


@pytest.fixture
def worker_factory(jobs_tmp: Path, config: Path, database: ServerDatabase) -> Callable[..., object]:
    return lambda **kw: jobworker(jobs_tmp, config, database, **kw)


def wait_for(condition: Callable[[], object], timeout_s: float, step_s: float = 0.05) -> object:
    """Poll ``condition`` until it is truthy (returned) or ``timeout_s`` passes (TimeoutError)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step_s)
    raise TimeoutError(f"not within {timeout_s} s")


def job_lines(count: int, start: int = 0, program_inputs: Callable[[int], dict] | None = None) -> bytes:
    import json

    make = program_inputs or (lambda n: {"question": f"q{n}"})
    return "".join(
        json.dumps({"custom_id": f"id-{n}", "inputs": make(n)}) + "\n" for n in range(start, start + count)
    ).encode()


def submit(url: str, body: bytes, program: str = "EchoAsync", **headers: str) -> httpx.Response:
    return httpx.post(
        f"{url}/api/jobs",
        params={"program": program},
        content=body,
        headers={"Content-Type": "application/x-ndjson", **headers},
        timeout=120,
    )


def wait_finished(url: str, job_id: str, timeout_s: float, **headers: str) -> dict:
    def finished() -> dict | None:
        job = httpx.get(f"{url}/api/jobs/{job_id}", headers=headers, timeout=10).json()
        return job if job["status"] in ("completed", "failed", "cancelled") else None

    return wait_for(finished, timeout_s, step_s=0.25)  # type: ignore[return-value]


def results(url: str, job_id: str, **headers: str) -> list[dict]:
    import json

    answer = httpx.get(f"{url}/api/jobs/{job_id}/results", headers=headers, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in answer.text.splitlines()]


__all__ = ["ROOT"]
