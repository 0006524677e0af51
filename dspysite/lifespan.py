"""Pure ASGI layers around Django's handler.

Django's ASGI handler does not answer the ``lifespan`` protocol, so start-up and shutdown hooks
(thread pools, telemetry flush) are run here, and so are the async contexts that stay open while
the server runs (the MCP session manager's). Oversized bodies are refused from the
``Content-Length`` header before Django spools them.
"""

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Hook = Callable[[], Awaitable[None]]
# Entered at start-up after the hooks, left at shutdown before them (newest first).
Context = Callable[[], AbstractAsyncContextManager[object]]


class LifespanMiddleware:
    def __init__(
        self, app: ASGIApp, on_startup: list[Hook], on_shutdown: list[Hook], contexts: Sequence[Context] = ()
    ) -> None:
        self.app = app
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown
        self.contexts = contexts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        # One task runs the whole lifespan, so a context (an anyio task group's cancel scope
        # included) is entered and left by the same task, as it must be.
        async with contextlib.AsyncExitStack() as running:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self._run("startup", self._start(running), send)
                elif message["type"] == "lifespan.shutdown":
                    await self._run("shutdown", self._stop(running), send)
                    return

    async def _start(self, running: contextlib.AsyncExitStack) -> None:
        for hook in self.on_startup:
            await hook()
        for context in self.contexts:
            await running.enter_async_context(context())

    async def _stop(self, running: contextlib.AsyncExitStack) -> None:
        try:
            await running.aclose()
        finally:
            for hook in self.on_shutdown:
                await hook()

    async def _run(self, phase: str, steps: Awaitable[None], send: Send) -> None:
        try:
            await steps
        except Exception as exc:
            logger.exception("lifespan %s failed", phase)
            await send({"type": f"lifespan.{phase}.failed", "message": str(exc)})
            return
        await send({"type": f"lifespan.{phase}.complete"})


async def send_json(
    send: Send, status: int, body: dict[str, Any], headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """A whole JSON response from a pure ASGI layer (the errors it answers before Django)."""
    content = json.dumps(body).encode()
    start = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": content})


class BodyLimitMiddleware:
    """413 at once for a declared body over the limit (chunked bodies are checked by Django)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, on_refused: Callable[[Scope, str], None] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_refused = on_refused  # told of each refusal (reported as the program's call)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._declared_length(scope) > self.max_bytes:
            detail = f"Request body is larger than {self.max_bytes} bytes"
            if self.on_refused is not None:
                self.on_refused(scope, detail)
            await send_json(send, 413, {"detail": detail})
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _declared_length(scope: Scope) -> int:
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return 0
        return 0
