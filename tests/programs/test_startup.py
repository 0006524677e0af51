"""Start-up behaviour of the real server process: failed modules, bad configs, name clashes."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from loadtest.servers import production_env
from tests.support import FIXTURES, ROOT, Running, project_config, service

pytestmark = pytest.mark.integration


def test_failed_module_makes_ready_503_and_others_still_serve(tmp_path: Path, mock: Running) -> None:
    project = FIXTURES / "broken_project"
    with service(tmp_path, project, project_config(project, tmp_path, mock.url)) as server:
        ready = httpx.get(f"{server.url}/health/ready")
        assert ready.status_code == 503
        (failed,) = ready.json()["failed"]
        assert failed["module"] == "broken.py"
        assert failed["programs"] == ["LostProgram"]
        assert "a_module_that_does_not_exist" in failed["error"]
        assert httpx.get(f"{server.url}/health/live").status_code == 200
        assert httpx.post(f"{server.url}/StillServed", json={"text": "abc"}).json() == {"output": "cba"}


def start_and_fail(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "uvicorn", "dspysite.asgi:application", "--port", "0"],
        cwd=ROOT,
        env={**production_env(), **os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_config_stops_start_up_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "dspy.config.yaml"
    config.write_text(
        "models:\n  default: m\n  registry:\n    m:\n      model: openai/x\n      max_tokens: -5\n"
    )
    result = start_and_fail(tmp_path, DSPY_CONFIG=str(config), DSPY_PROJECT_DIR="")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert errors == [
        f"dspy-django: cannot start: {config}: models.registry.m.max_tokens: " + errors[0].split(": ")[-1]
    ]
    assert "max_tokens" in errors[0]
    assert "Traceback" not in result.stderr


def test_duplicate_program_names_stop_start_up(tmp_path: Path) -> None:
    modules = tmp_path / "src" / "dup_start" / "modules"
    modules.mkdir(parents=True)
    (tmp_path / "src" / "dup_start" / "__init__.py").write_text("")
    program = textwrap.dedent(
        """
        import dspy

        class Twice(dspy.Module):
            def forward(self, x: str) -> str:
                return x
        """
    )
    (modules / "a.py").write_text(program)
    (modules / "b.py").write_text(program)
    (tmp_path / "dspy.config.yaml").write_text((FIXTURES / "broken_project" / "dspy.config.yaml").read_text())
    result = start_and_fail(tmp_path, DSPY_PROJECT_DIR=str(tmp_path), DSPY_CONFIG="")
    assert result.returncode != 0
    assert "program name Twice is defined twice" in result.stderr
    assert "Traceback" not in result.stderr


def test_runserver_help_says_it_reloads_and_is_not_for_production() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "runserver", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    text = " ".join(result.stdout.split())
    assert "RELOADS on code changes" in text
    assert "Never use it in production" in text
    assert "--sync-workers" in text
