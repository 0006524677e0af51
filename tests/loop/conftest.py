"""Fixtures for the loop's tests: the loop project served over real sockets, a real database."""

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.databases import ServerDatabase
from tests.jobs.conftest import jobworker as job_worker
from tests.support import FIXTURES, ROOT, Running, project_config, service
from tests.telemetry.conftest import database, wait_for  # noqa: F401 - the same fixture and poll

LOOP_PROJECT = FIXTURES / "loop_project"


@pytest.fixture
def start_server(tmp_path: Path, llm: Running) -> Callable[..., Any]:
    """``with start_server(database, auth=False, **env) as server:`` the loop project under uvicorn."""

    @contextmanager
    def start(
        db: ServerDatabase, auth: bool = False, jobworker: bool = False, **env: str
    ) -> Iterator[Running]:
        """``jobworker``: a ``manage.py jobworker`` beside the server (evaluations, optimizations)."""
        server = {"auth": auth, "request_timeout_s": 30}
        config = project_config(LOOP_PROJECT, tmp_path, llm.url, server=server)
        # Traces are opt-in outside development (dspysite/settings.py): these servers opt in.
        settings = {"TELEMETRY_FLUSH_INTERVAL_S": "0.1", "API_KEY_CACHE_TTL_S": "0.5"}
        settings["CAPTURE_TRACES"] = "true"
        settings.update(env)
        with service(tmp_path, LOOP_PROJECT, config, **db.env(), **settings) as running:
            if not jobworker:
                yield running
                return
            with job_worker(tmp_path, config, db, DSPY_PROJECT_DIR=str(LOOP_PROJECT), **settings):
                yield running

    return start


def manage(
    db: ServerDatabase, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> str:
    env = {
        **os.environ,
        **db.env(),
        "LOG_LEVEL": "WARNING",
        "DSPY_PROJECT_DIR": str(LOOP_PROJECT),
        **(env or {}),
    }
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, input=stdin
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def api_key(db: ServerDatabase, name: str, scopes: str = "invoke,read") -> str:
    return manage(db, "apikey", "create", name, "--scopes", scopes)


def client(server: Running, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def traced_call(http: httpx.Client, request_id: str) -> dict[str, Any]:
    """``GET /api/calls/{id}`` once its trace is written (the writer's queue, off the request path)."""

    def written() -> dict[str, Any] | None:
        response = http.get(f"/api/calls/{request_id}")
        return response.json() if response.status_code == 200 and response.json()["traced"] else None

    return wait_for(written, what=f"the trace of {request_id}")


def ask(http: httpx.Client, program: str, question: str, request_id: str) -> httpx.Response:
    """``POST /<program>`` with ``{"question": ...}`` and a chosen request id; asserts a 200."""
    response = http.post(f"/{program}", json={"question": question}, headers={"X-Request-ID": request_id})
    assert response.status_code == 200, response.text
    return response


def examples(questions_and_answers: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Dataset items of the ``Answer`` program: ``{"inputs": {"question"}, "labels": {"answer"}}``."""
    return [{"inputs": {"question": q}, "labels": {"answer": a}} for q, a in questions_and_answers]


def finished(http: httpx.Client, path: str) -> dict[str, Any]:
    """An evaluation's or optimization's body once it has ended (bounded)."""

    def done() -> dict[str, Any] | None:
        body = http.get(path).json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(done, timeout_s=120, what=path)


PASSWORD = "loop-test-password"  # a throwaway superuser in a throwaway database


@contextmanager
def staff_session(server_url: str, db: ServerDatabase) -> Iterator[httpx.Client]:
    """A logged-in staff session (the admin's login form, with its CSRF token)."""
    manage(db, "createsuperuser", "--noinput", "--username", "admin", "--email", "a@example.com",
           env={"DJANGO_SUPERUSER_PASSWORD": PASSWORD})  # fmt: skip
    with httpx.Client(base_url=server_url, timeout=30, follow_redirects=True) as browser:
        page = browser.get("/admin/login/").text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        form = {"username": "admin", "password": PASSWORD, "csrfmiddlewaretoken": token, "next": "/admin/"}
        assert "Log out" in browser.post("/admin/login/?next=/admin/", data=form).text
        yield browser
