"""A redis-server of the test's own, on a free loopback port, that the test can stop and restart.

Stopping Redis in the middle of a test (the "Redis down" behaviour of the limits) needs a server
nobody else uses. ``redis-server`` must be on PATH; :func:`require_redis_server` skips otherwise.
Persistence is off (``--save '' --appendonly no``): a restart starts empty, like a lost cache.
"""

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from loadtest.servers import free_port, stop
from tests.telemetry.conftest import wait_for


def require_redis_server() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    return binary


class RedisServer:
    """``url``; :meth:`stop` (by PID) and :meth:`start` again on the same port."""

    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        self.binary = require_redis_server()
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = log_dir / f"redis-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        argv = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        wait_for(lambda: self._answers(client), 10, f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def _answers(self, client: redis.Redis) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {self.log_path.read_text()[-500:]}")
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False


@contextmanager
def redis_server(log_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(log_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
