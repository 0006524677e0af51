"""One request through the service's ASGI handler in this process, counting the threads it starts.

The handler is built for each request, so its middleware chain reads the settings and the
environment as the test left them.
"""

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

from dspysite.handler import ServiceASGIHandler


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names lowercased
    threads_started: int


def request(method: str, path: str, headers: dict[str, str] | None = None) -> Answer:
    started = 0
    original_start = threading.Thread.start

    def counting_start(self: threading.Thread) -> None:
        nonlocal started
        started += 1
        original_start(self)

    sent_headers = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *sent_headers],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client stays connected
        return {}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    handler = ServiceASGIHandler()
    threading.Thread.start = counting_start  # type: ignore[method-assign]
    try:
        asyncio.run(handler(scope, receive, send))  # type: ignore[arg-type]
    finally:
        threading.Thread.start = original_start  # type: ignore[method-assign]
    answered = {name.decode().lower(): value.decode() for name, value in sent[0]["headers"]}
    return Answer(sent[0]["status"], answered, started)
