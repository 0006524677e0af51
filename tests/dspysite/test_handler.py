"""The ASGI handler: no thread starts for API requests, Django's behaviour for browser paths."""

import asyncio
from typing import Any

import pytest
from django.http import HttpResponse

from dspysite.handler import ServiceASGIHandler
from tests.dspysite.handler_request import request


@pytest.mark.django_db
def test_api_request_starts_no_thread() -> None:
    answer = request("GET", "/health/live")
    assert answer.status == 200
    assert answer.threads_started == 0


@pytest.mark.django_db
def test_browser_request_keeps_djangos_thread_sensitive_handling() -> None:
    answer = request("GET", "/admin/login/")
    assert answer.status == 200
    assert answer.threads_started >= 1


@pytest.mark.django_db
def test_a_disconnect_as_the_response_is_ready_cancels_nothing_after_it() -> None:
    """The listener sees the client leave in the loop round in which the response becomes ready.

    Its done-callback is then already scheduled when the request's task takes the response and
    removes the callback: it must not cancel the task later, in whatever the task awaits next
    (closing the response in a thread, the exit of Django's thread-sensitive context).
    """

    async def run() -> tuple[HttpResponse | None, int]:
        loop = asyncio.get_running_loop()
        client_leaves, response_ready = loop.create_future(), loop.create_future()
        handler = ServiceASGIHandler()

        async def receive() -> dict[str, Any]:
            await client_leaves
            return {"type": "http.disconnect"}

        async def run_get_response(request: Any) -> HttpResponse:
            return await response_ready

        async def send(message: dict[str, Any]) -> None:
            pass

        async def respond() -> tuple[HttpResponse | None, int]:
            response = await handler._respond_unless_disconnected(object(), receive, send)
            for _ in range(3):  # the rounds in which a late cancellation would land
                await asyncio.sleep(0)
            return response, asyncio.current_task().cancelling()  # type: ignore[union-attr]

        handler.run_get_response = run_get_response  # type: ignore[method-assign]
        task = asyncio.create_task(respond())
        for _ in range(2):  # the listener starts and waits in receive()
            await asyncio.sleep(0)
        client_leaves.set_result(None)  # the listener wakes first...
        response_ready.set_result(HttpResponse(b"done"))  # ...then the request's task, same round
        return await task

    response, cancelling = asyncio.run(run())
    assert response is not None and response.content == b"done"
    assert cancelling == 0
