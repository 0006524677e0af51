"""`manage.py runserver` starts the bundled mock LLM when the config uses it, and the mock ends with
it, however runserver ends (uvicorn re-raises SIGTERM after its shutdown: no `finally` runs)."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, free_port, wait_until_ready
from tests.telemetry.conftest import wait_for

pytestmark = pytest.mark.integration


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_the_mock_llm_ends_when_runserver_is_terminated(tmp_path: Path) -> None:
    mock_port, port = free_port(), free_port()
    config = tmp_path / "dspy.config.yaml"
    config.write_text(
        "models:\n  default: mock\n  registry:\n    mock:\n      model: openai/mock-model\n"
        f"      api_base: http://127.0.0.1:{mock_port}/v1\n      api_key: k\n"
    )
    env = {
        **os.environ,
        "DSPY_CONFIG": str(config),
        "DSPY_PROJECT_DIR": "",
        "DATABASE_URL": f"sqlite:///{tmp_path}/db",
    }
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/health/live", server)
        assert httpx.get(f"http://127.0.0.1:{mock_port}/health").status_code == 200
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        assert wait_for(lambda: not listening(mock_port), timeout_s=20, what="the mock LLM to exit")
    finally:
        if server.poll() is None:
            server.kill()
