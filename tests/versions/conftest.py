"""A server with API keys on, its own migrated database (PostgreSQL when DATABASE_URL says so),
serving tests/fixtures/service_project, whose ``Optimized`` program loads a saved state."""

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.databases import ServerDatabase, server_database
from tests.support import FIXTURES, ROOT, Running, project_config, service

SERVICE_PROJECT = FIXTURES / "service_project"
SAVED_STATE = SERVICE_PROJECT / "src/service_programs/modules/optimized.json"


def state_with_demo(question: str, answer: str, instructions: str | None = None) -> dict[str, Any]:
    """The Optimized program's saved state with one demo of our own (and maybe other instructions)."""
    state = copy.deepcopy(json.loads(SAVED_STATE.read_text()))
    state["predict"]["demos"] = [{"question": question, "answer": answer}]
    if instructions is not None:
        state["predict"]["signature"]["instructions"] = instructions
    return state


@dataclass
class Served:
    server: Running
    database: ServerDatabase
    config: Path

    @property
    def url(self) -> str:
        return self.server.url


def manage(served: Served, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``manage.py`` on the server's database, with its programs (a version is checked against them)."""
    env = {
        **os.environ,
        **served.database.env(),
        "LOG_LEVEL": "WARNING",
        "DSPY_PROJECT_DIR": str(SERVICE_PROJECT),
        "DSPY_CONFIG": str(served.config),
    }
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, mock: Running) -> Iterator[Served]:
    """One uvicorn process with API keys on (a versions poll of 0.1 s: the command's moves show fast)."""
    tmp = tmp_path_factory.mktemp("versions")
    config = project_config(SERVICE_PROJECT, tmp, mock.url, server={"auth": True})
    with (
        server_database(tmp) as database,
        service(tmp, SERVICE_PROJECT, config, VERSIONS_POLL_S="0.1", **database.env()) as running,
    ):
        yield Served(running, database, config)


@pytest.fixture(scope="module")
def admin(keyed: Served) -> dict[str, str]:
    key = manage(keyed, "apikey", "create", "versions-admin", "--scopes", "invoke,read,admin").stdout.strip()
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def invoker(keyed: Served) -> dict[str, str]:
    key = manage(keyed, "apikey", "create", "versions-invoker", "--scopes", "invoke,read").stdout.strip()
    return {"Authorization": f"Bearer {key}"}


def last_prompt(mock: Running) -> str:
    """The text of the last chat request the mock LLM received."""
    body = httpx.get(f"{mock.url}/requests", params={"limit": 1}).json()["requests"][-1]
    return json.dumps(body["messages"])
