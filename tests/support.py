"""Start the real servers the tests talk to: the mock LLM and this service, on free loopback ports.

Processes are started by the tests and stopped by PID; readiness is waited for by polling the
server's health route (a bounded wait for a condition, not a sleep).
"""

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from loadtest.servers import free_port, production_env, stop

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
# A project made by dspy-cli's own commands, with gateways, cron and an image input (its FIXTURE.md).
DSPY_CLI_PROJECT = FIXTURES / "dspy_cli_project"

# What this service answers to each fault the mock LLM can inject (loadtest/README.md). A provider's
# 429 (once the retries are spent) is a temporary overload, not a broken server: 503 with
# upstream_status 429 and Retry-After (this service's own 429 means it is at capacity).
FAULT_STATUS = {
    **dict.fromkeys(("500", "malformed", "badjson", "drop", "cut"), 502),
    "429": 503,
    "stall": 504,
}


# How long a server may take to answer after it was started. DSPy 3.3 imports LiteLLM at start-up
# (8 s of CPU profiled, ~40 s to ready on this shared machine at load 10, 3.4.1 ~15 s); the oldest-DSPy
# pass (make test-oldest-dspy) starts two at once and allows more.
READY_TIMEOUT_S = float(os.environ.get("TEST_READY_TIMEOUT_S", "60"))


def wait_until_ready(url: str, process: subprocess.Popen, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


@dataclass
class Running:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()


@contextmanager
def mock_llm(tmp_dir: Path, **env: str) -> Iterator[Running]:
    port = free_port()
    log_path = tmp_dir / f"mock-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "loadtest" / "mock_llm.py"), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/health", process)
        yield Running(f"http://127.0.0.1:{port}", process, log_path)
    finally:
        stop(process)


def project_config(project: Path, tmp_dir: Path, mock_url: str, **overrides: object) -> Path:
    """A copy of a fixture project's config whose models point at the running mock."""
    path = tmp_dir / f"{project.name}.config.yaml"
    _write_mock_config(project / "dspy.config.yaml", path, mock_url, overrides)
    return path


def project_copy(project: Path, tmp_dir: Path, mock_url: str, **overrides: object) -> Path:
    """A copy of a whole fixture project, its models pointing at the running mock.

    For a test that serves the project from its own directory, or lets it write there (pip builds,
    a cron gateway's files): the fixture in the repository stays untouched.
    """
    copy = tmp_dir / project.name
    shutil.copytree(project, copy)
    _write_mock_config(copy / "dspy.config.yaml", copy / "dspy.config.yaml", mock_url, overrides)
    return copy


def _write_mock_config(source: Path, target: Path, mock_url: str, overrides: dict[str, object]) -> None:
    config = yaml.safe_load(source.read_text())
    for entry in config["models"]["registry"].values():
        entry["api_base"] = f"{mock_url}/v1"
    config.update(overrides)
    target.write_text(yaml.safe_dump(config))


@contextmanager
def service(
    tmp_dir: Path,
    project: Path,
    config: Path,
    command: list[str] | None = None,
    wait: bool = True,
    **env: str,
) -> Iterator[Running]:
    """This service under uvicorn (or ``command``), serving ``project`` with ``config``.

    ``wait=False``: yield at once, for a caller that starts several and waits for them together.
    """
    port = free_port()
    log_path = tmp_dir / f"server-{port}.log"
    argv = command or [
        sys.executable, "-m", "uvicorn", "dspysite.asgi:application",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--timeout-keep-alive", "65",
    ]  # fmt: skip
    environment = {
        # A strong SECRET_KEY, and DSPY_AUTH=false unless the config sets server.auth: what DEBUG
        # off needs to start with the API open (loadtest/servers.py). The caller's env wins.
        **production_env(config),
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "dspysite.settings",
        "DSPY_PROJECT_DIR": str(project),
        "DSPY_CONFIG": str(config),
        "BIND": f"127.0.0.1:{port}",
        **env,
    }
    with log_path.open("w") as log:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=environment)
    try:
        if wait:
            wait_until_ready(f"http://127.0.0.1:{port}/health/live", process)
        yield Running(f"http://127.0.0.1:{port}", process, log_path)
    finally:
        stop(process)
