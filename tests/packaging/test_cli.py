"""``dspy-django`` from the checkout: serve the dspy-cli project in the current directory.

The installed command is tested from a fresh virtualenv in test_wheel.py; this runs the same code
from the repository (uvicorn, one process) with the project's own package on ``PYTHONPATH``, as the
project's environment would provide it.
"""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.packaging.served import applied_migrations, project_env
from tests.support import DSPY_CLI_PROJECT, ROOT, Running, free_port, project_copy, stop, wait_until_ready

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "dspysite.cli"]


def checkout_env(project: Path, **extra: str) -> dict[str, str]:
    """The checkout's code, and acme_text as if the project's environment had installed it."""
    paths = os.pathsep.join([str(ROOT), str(project / "packages" / "acme_text")])
    return project_env(PYTHONPATH=paths, **extra)


@pytest.fixture
def project(tmp_path: Path, mock: Running) -> Path:
    return project_copy(DSPY_CLI_PROJECT, tmp_path, mock.url)


@pytest.fixture
def served(project: Path, tmp_path: Path) -> Iterator[tuple[Running, Path]]:
    database = tmp_path / "fresh.sqlite3"
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*CLI, "serve", "--port", str(port)],
            cwd=project,
            env=checkout_env(project, DATABASE_URL=f"sqlite:///{database}"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/health/live", process, timeout_s=120)
        yield Running(f"http://127.0.0.1:{port}", process, log_path), database
    finally:
        stop(process)


def test_serve_migrates_then_serves_the_project_in_the_current_directory(
    served: tuple[Running, Path], project: Path
) -> None:
    server, database = served
    assert {"telemetry", "apikeys", "auth"} <= applied_migrations(database)
    # No SECRET_KEY given (DEBUG off): serve made the project's own, readable by its owner only.
    secret = project / ".dspy-django" / "secret_key"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert len(secret.read_text().strip()) >= 50

    response = httpx.post(
        f"{server.url}/SummarizeTicketPredict", json={"ticket": "Write to ann@example.org today"}, timeout=30
    )
    assert response.status_code == 200, server.log()
    summary = response.json()["summary"]
    # The mock echoes the ticket as the model saw it: acme_text redacted it inside the module.
    assert "[email]" in summary
    assert "ann@example.org" not in summary


def test_manage_passes_any_command_through(project: Path) -> None:
    listed = subprocess.run(
        [*CLI, "manage", "programs", "--json"],
        cwd=project,
        env=checkout_env(project),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)
    assert found["config"] == str(project / "dspy.config.yaml")
    assert {program["name"] for program in found["programs"]} == {
        "DescribeImagePredict",
        "SummarizeTicketPredict",
        "TriageTicketPredict",
    }


def test_outside_a_project_it_says_what_is_missing_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "migrate"],
        cwd=tmp_path,
        env=checkout_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert f"{tmp_path / 'dspy.config.yaml'} not found" in result.stderr
    assert not (tmp_path / ".dspy-django").exists()
