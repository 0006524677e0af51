"""The ASGI handler: no thread starts for API requests, Django's behaviour for browser paths."""

import asyncio
import threading
from typing import Any

import pytest

from dspysite.handler import ServiceASGIHandler


def call(path: str) -> tuple[int, int]:
    """Run one GET through the handler in-process; return (status, threads started)."""
    started = 0
    original_start = threading.Thread.start

    def counting_start(self: threading.Thread) -> None:
        nonlocal started
        started += 1
        original_start(self)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
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

    async def run() -> None:
        await ServiceASGIHandler()(scope, receive, send)

    threading.Thread.start = counting_start  # type: ignore[method-assign]
    try:
        asyncio.run(run())
    finally:
        threading.Thread.start = original_start  # type: ignore[method-assign]
    return sent[0]["status"], started


@pytest.mark.django_db
def test_api_request_starts_no_thread() -> None:
    status, threads = call("/health/live")
    assert status == 200
    assert threads == 0


@pytest.mark.django_db
def test_browser_request_keeps_djangos_thread_sensitive_handling() -> None:
    status, threads = call("/admin/login/")
    assert status == 200
    assert threads >= 1
