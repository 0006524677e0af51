"""Live events: every committed batch reaches /api/events subscribers (across workers with Redis)."""

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.databases import ServerDatabase
from tests.support import Running
from tests.telemetry.conftest import wait_for
from tests.telemetry.test_server import _concurrently

pytestmark = pytest.mark.integration

GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "dspysite/gunicorn.conf.py"]


class Subscriber:
    """Reads ``/api/events`` in a thread and keeps the batch events it receives."""

    def __init__(self, server: Running) -> None:
        self.url = f"{server.url}/api/events"
        self.connected = threading.Event()
        self.events: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        # The server sends a heartbeat every 15 s, so a read never waits longer than that on a live
        # stream. (A read timeout raised inside iter_lines would end the generator for good.)
        try:
            with httpx.stream("GET", self.url, timeout=httpx.Timeout(5.0, read=60.0)) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if line == ": connected":
                        self.connected.set()
                    elif line.startswith("data: "):
                        self.events.append(json.loads(line.removeprefix("data: ")))
        except httpx.TransportError:
            if not self._stop.is_set():  # the server going away after close() is expected
                raise

    def calls(self, program: str) -> int:
        return sum(event["programs"].get(program, {}).get("calls", 0) for event in list(self.events))

    def workers(self) -> set[str]:
        return {event["worker"] for event in list(self.events)}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_each_committed_batch_is_streamed_to_subscribers(database: ServerDatabase, start_server: Any) -> None:
    with start_server(database) as server:
        subscriber = Subscriber(server)
        assert subscriber.connected.wait(30)
        for i in range(3):
            response = httpx.post(f"{server.url}/EchoAsync", json={"question": f"live {i} [usage=4,1]"})
            assert response.status_code == 200
        wait_for(lambda: subscriber.calls("EchoAsync") == 3, 30, "3 calls in live events")
        assert subscriber.calls("EchoSync") == 0
        assert sum(e["programs"]["EchoAsync"]["tokens"] for e in subscriber.events) == 15
        subscriber.close()


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (REDIS_URL) for cross-worker events")
def test_events_from_every_worker_reach_one_subscriber(
    database: ServerDatabase, start_server: Any, tmp_path: Path
) -> None:
    env = {"WEB_CONCURRENCY": "2", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus")}
    requests = [("/EchoAsync", f"r{i}", {"question": f"redis {i} [delay=30]"}) for i in range(120)]
    with start_server(database, command=GUNICORN, **env) as server:
        wait_for(lambda: server.log().count("Application startup complete") == 2, 60, "both workers")
        subscriber = Subscriber(server)  # one connection: one worker
        assert subscriber.connected.wait(30)
        assert [r.status_code for r in _concurrently(server, requests)] == [200] * 120
        wait_for(lambda: subscriber.calls("EchoAsync") == 120, 30, "every call in live events")
        assert len(subscriber.workers()) == 2  # both workers' batches reached this one connection
        subscriber.close()
