"""Safe by default (issue 21): what a production server (DEBUG off) refuses and what it answers.

Start-up refusals of uvicorn and of gunicorn's master (before any worker forks), API keys on by
default and the one warning line when they are turned off; the HTTP tests run against two gunicorn
workers, as in production.
"""

import os
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dspysite.safety import DEVELOPMENT_SECRET_KEY, project_secret_key
from tests.databases import ServerDatabase
from tests.support import FIXTURES, ROOT, Running, free_port, project_config
from tests.workers import gunicorn_workers

pytestmark = pytest.mark.integration

SERVICE_PROJECT = FIXTURES / "service_project"
UVICORN = [sys.executable, "-m", "uvicorn", "dspysite.asgi:application", "--host", "127.0.0.1"]
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "dspysite/gunicorn.conf.py"]
UNSAFE_KEYS = {
    "unset": (None, "SECRET_KEY is not set"),
    "development": (DEVELOPMENT_SECRET_KEY, "SECRET_KEY is the public development value"),
    "short": ("k3y-" + secrets.token_hex(10), "SECRET_KEY is weak (Django's security.W009): 24 characters"),
    "few unique": ("abcd" * 20, "SECRET_KEY is weak (Django's security.W009): 80 characters, 4 unique"),
    "django-insecure": ("django-insecure-" + secrets.token_urlsafe(48), "SECRET_KEY is weak"),
}


def start_and_stop(
    argv: list[str], tmp_path: Path, config: Path, **env: str | None
) -> subprocess.CompletedProcess:
    """A server that must refuse to start: it exits by itself (bounded by the timeout)."""
    environment = {
        **os.environ,
        "DSPY_PROJECT_DIR": str(SERVICE_PROJECT),
        "DSPY_CONFIG": str(config),
        "BIND": f"127.0.0.1:{free_port()}",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'refused.sqlite3'}",
    }
    for name, value in env.items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    return subprocess.run(argv, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=90)


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
@pytest.mark.parametrize("case", list(UNSAFE_KEYS))
def test_debug_off_refuses_an_unsafe_secret_key_with_one_line(
    server: str, case: str, tmp_path: Path, mock: Running
) -> None:
    key, says = UNSAFE_KEYS[case]
    # uvicorn reads WEB_CONCURRENCY as its --workers: only gunicorn gets it.
    argv = [*UVICORN, "--port", str(free_port())] if server == "uvicorn" else GUNICORN
    gunicorn = server == "gunicorn"
    workers = {"WEB_CONCURRENCY": "2" if gunicorn else None,
               "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus") if gunicorn else None}  # fmt: skip
    config = project_config(SERVICE_PROJECT, tmp_path, mock.url)
    result = start_and_stop(argv, tmp_path, config, SECRET_KEY=key, DEBUG=None, DSPY_AUTH="false", **workers)
    assert result.returncode == 2, result.stderr[-2000:]
    refusals = [line for line in result.stderr.splitlines() if line.startswith("dspy-django: cannot start:")]
    assert len(refusals) == 1, result.stderr[-2000:]
    assert says in refusals[0]
    assert "Traceback" not in result.stderr
    assert "Booting worker" not in result.stderr  # gunicorn's master refused before forking


def test_debug_on_starts_without_a_key(tmp_path: Path, mock: Running) -> None:
    """Development (runserver sets DEBUG on): no key needed; bounded by a readiness poll."""
    config = project_config(SERVICE_PROJECT, tmp_path, mock.url)
    port = free_port()
    environment = {**os.environ, "DSPY_PROJECT_DIR": str(SERVICE_PROJECT), "DSPY_CONFIG": str(config),
                   "DEBUG": "true", "DATABASE_URL": f"sqlite:///{tmp_path / 'dev.sqlite3'}"}  # fmt: skip
    environment.pop("SECRET_KEY", None)
    log = tmp_path / "dev.log"
    with log.open("w") as out:
        process = subprocess.Popen([*UVICORN, "--port", str(port)], cwd=ROOT, env=environment, stdout=out,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    try:
        from tests.support import wait_until_ready

        wait_until_ready(f"http://127.0.0.1:{port}/health/live", process)
        # Keys are off with DEBUG on: the program answers without one, and nothing warns.
        answer = httpx.post(f"http://127.0.0.1:{port}/EchoSync", json={"question": "dev"}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert "API keys are off" not in log.read_text()
    finally:
        from tests.support import stop

        stop(process)


@pytest.fixture(scope="module")
def keyed(
    tmp_path_factory: pytest.TempPathFactory, mock: Running
) -> Iterator[tuple[Running, ServerDatabase]]:
    """Two gunicorn workers, DEBUG off, nothing said about keys: keys are on."""
    tmp = tmp_path_factory.mktemp("keyed")
    config = project_config(SERVICE_PROJECT, tmp, mock.url)
    # DSPY_AUTH="" is no override (the helpers open the API for the other tests): the default decides.
    with gunicorn_workers(tmp, SERVICE_PROJECT, config, DSPY_AUTH="", MAX_BODY_BYTES="65536") as running:
        yield running


def api_key(database: ServerDatabase, name: str) -> str:
    env = {**os.environ, **database.env(), "LOG_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "manage.py", "apikey", "create", name], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_api_keys_are_on_by_default_with_debug_off(keyed: tuple[Running, ServerDatabase]) -> None:
    server, database = keyed
    refused = httpx.post(f"{server.url}/EchoSync", json={"question": "no key"}, timeout=30)
    assert refused.status_code == 401, refused.text
    key = api_key(database, "default-on")
    headers = {"Authorization": f"Bearer {key}"}
    answered = httpx.post(f"{server.url}/EchoSync", json={"question": "key"}, headers=headers, timeout=30)
    assert answered.status_code == 200, answered.text
    assert "API keys are off" not in server.log()


def test_dspy_auth_false_opens_the_api_with_one_warning_line(tmp_path: Path, mock: Running) -> None:
    config = project_config(SERVICE_PROJECT, tmp_path, mock.url)
    with gunicorn_workers(tmp_path, SERVICE_PROJECT, config, DSPY_AUTH="false") as (server, _database):
        answered = httpx.post(f"{server.url}/EchoSync", json={"question": "open"}, timeout=30)
        assert answered.status_code == 200, answered.text
        warnings = [line for line in server.log().splitlines() if "API keys are off" in line]
        assert len(warnings) == 1, server.log()  # said by the master, once, not by each worker


def test_the_project_secret_is_made_once_private_and_reused(tmp_path: Path) -> None:
    state = tmp_path / ".dspy-django"
    first = project_secret_key(state)
    assert len(first) >= 50 and len(set(first)) >= 5
    assert stat.S_IMODE((state / "secret_key").stat().st_mode) == 0o600
    assert project_secret_key(state) == first
