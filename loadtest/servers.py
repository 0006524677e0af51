"""The processes of a load-test script: the mock LLM and this service, on loopback, stopped by PID.

Shared by ``soak.py`` and ``torture.py`` (``run_benchmark.sh`` does the same in shell). The
service serves ``loadtest/fixture_project`` with a copy of its config pointing at the mock and a
throw-away SQLite database in the caller's work directory, so telemetry rows are written as in
production. Only processes started here are signalled.
"""

import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from dspysite.keepalive import DEFAULT_KEEP_ALIVE_S

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIXTURE = HERE / "fixture_project"
READY_TIMEOUT_S = 90.0
MODES = ("single", "production")


# A production server (DEBUG off) refuses to start without a strong SECRET_KEY and has API keys on
# unless told otherwise (docs/DEPLOYMENT.md): the kit's and the tests' servers get this process's own
# random key, and an open API unless their config says `server.auth` (or the caller sets DSPY_AUTH).
TEST_SECRET_KEY = f"kit-{secrets.token_urlsafe(48)}"


def production_env(config: Path | None = None) -> dict[str, str]:
    """What a test or kit server needs to start with DEBUG off; the caller's environment goes on top."""
    env = {"SECRET_KEY": TEST_SECRET_KEY}
    server = (yaml.safe_load(config.read_text()) or {}).get("server") or {} if config else {}
    if "auth" not in server:
        env["DSPY_AUTH"] = "false"
    return env


class StartError(RuntimeError):
    """A process did not come up; the message ends with the tail of its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """TERM (a graceful stop: the server flushes telemetry), KILL after ``timeout_s``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


def wait_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    """Poll ``url`` until it answers below 500, while ``process`` lives, for a bounded time."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StartError(f"{url}: exited with {process.returncode} before it was ready:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own loopback server
                if response.status < 500:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise StartError(f"{url} not ready within {READY_TIMEOUT_S:g} s:\n{_tail(log)}")


def start_mock(work: Path, delay_ms: float) -> tuple[subprocess.Popen, str]:
    """The mock LLM on a free port (read from its banner); returns it and its base URL."""
    log = work / "mock.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, str(HERE / "mock_llm.py"), "--host", "127.0.0.1", "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MOCK_DELAY_MS": f"{delay_ms:g}"},
        )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        match = re.search(r"mock LLM listening on (http://\S+)/v1", log.read_text())
        if match:
            return process, match.group(1)
        if process.poll() is not None:
            raise StartError(f"the mock LLM exited:\n{_tail(log)}")
        time.sleep(0.05)
    stop(process)
    raise StartError("the mock LLM did not start")


def service_env(work: Path, mock_url: str, **extra: str) -> dict[str, str]:
    """The environment of this service serving the fixture against ``mock_url``; migrates its database."""
    config = yaml.safe_load((FIXTURE / "dspy.config.yaml").read_text())
    for entry in config["models"]["registry"].values():
        entry["api_base"] = f"{mock_url}/v1"
    config_path = work / "dspy.config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {
        **production_env(config_path),
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "dspysite.settings",
        "DSPY_PROJECT_DIR": str(FIXTURE),
        "DSPY_CONFIG": str(config_path),
        "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}",
        **extra,
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )
    return env


def start_server(
    work: Path, env: dict[str, str], mode: str = "single", workers: int = 2
) -> tuple[subprocess.Popen, str]:
    """This service as docs/DEPLOYMENT.md runs it: one uvicorn process, or gunicorn with ``workers``.

    ``KEEP_ALIVE_TIMEOUT`` in ``env`` sets the keep-alive timeout of either (default: the project's).
    """
    port = free_port()
    log = work / f"server-{mode}.log"
    if mode == "single":  # a lone uvicorn does not read KEEP_ALIVE_TIMEOUT: the documented flag
        keep_alive = env.get("KEEP_ALIVE_TIMEOUT") or str(DEFAULT_KEEP_ALIVE_S)
        argv = [sys.executable, "-m", "uvicorn", "dspysite.asgi:application", "--host", "127.0.0.1",
                "--port", str(port), "--no-access-log", "--timeout-keep-alive", keep_alive]  # fmt: skip
    else:
        argv = [sys.executable, "-m", "gunicorn", "-c", "dspysite/gunicorn.conf.py",
                "--control-socket", str(work / "gunicorn.ctl")]  # fmt: skip
        # gunicorn.conf.py creates (and empties) the metrics directory: this run's own.
        env = {**env, "BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": str(workers),
               "PROMETHEUS_MULTIPROC_DIR": str(work / "prometheus")}  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/health/ready", process, log)
        if mode == "production":  # one worker answering is not all of them
            _wait_for_workers(process, log, workers)
    except BaseException:
        stop(process)
        raise
    return process, url


def _wait_for_workers(process: subprocess.Popen, log: Path, workers: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while log.read_text(errors="replace").count("Application startup complete") < workers:
        if process.poll() is not None or time.monotonic() > deadline:
            raise StartError(f"not all {workers} gunicorn workers started:\n{_tail(log)}")
        time.sleep(0.1)
