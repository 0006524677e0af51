"""Development helpers for ``manage.py runserver``: start the bundled mock LLM when it is the model."""

import logging
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from programs.config import ServiceConfig

logger = logging.getLogger(__name__)

MOCK_MODEL = "openai/mock-model"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def mock_address(config: ServiceConfig) -> tuple[str, int] | None:
    """Host and port of the bundled mock, if a configured model is the mock on a loopback address."""
    for entry in config.models.registry.values():
        if entry.model != MOCK_MODEL or not entry.api_base:
            continue
        url = urlsplit(entry.api_base)
        if url.hostname in _LOOPBACK and url.port:
            return url.hostname, url.port
    return None


def is_listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def start_mock_llm(base_dir: Path, host: str, port: int) -> subprocess.Popen[str]:
    """Start ``loadtest/mock_llm.py`` and wait for its "listening" line."""
    script = base_dir / "loadtest" / "mock_llm.py"
    # --exit-with-parent: the mock ends when this process does, even when uvicorn re-raises SIGTERM
    # after its shutdown and no ``finally`` of ours runs; it reads EOF on the pipe held here.
    process = subprocess.Popen(
        [sys.executable, str(script), "--host", host, "--port", str(port), "--exit-with-parent"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if process.poll() is not None or "listening" not in line:
        process.kill()
        raise RuntimeError(f"the bundled mock LLM did not start on {host}:{port}: {line or 'no output'}")
    return process
