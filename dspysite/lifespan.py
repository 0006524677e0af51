"""Pure ASGI layers around Django's handler.

Django's ASGI handler does not answer the ``lifespan`` protocol, so start-up and shutdown hooks
(thread pools, telemetry flush) are run here, and so are the async contexts that stay open while
the server runs (the MCP session manager's). Oversized bodies are refused from the
``Content-Length`` header before Django spools them.
"""

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from asgiref.typing import (
    ASGI3Application,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)

logger = logging.getLogger(__name__)

# asgiref's ASGI types, under the short names the pure ASGI layers use.
Message = ASGISendEvent | ASGIReceiveEvent
Receive = ASGIReceiveCallable
Send = ASGISendCallable
ASGIApp = ASGI3Application
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


def header(scope: Scope, name: bytes) -> bytes:
    """The first value of request header ``name`` (lowercase, as ASGI gives names), or b""."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return b""


def body_framing(scope: Scope) -> tuple[int | None, bool]:
    """The declared length, if any, and whether the body comes in chunks (Transfer-Encoding)."""
    declared = None
    chunked = False
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                declared = None
        elif name == b"transfer-encoding":
            chunked = True
    return declared, chunked


class BodyLimitMiddleware:
    """413 for a body over the limit: at once from ``Content-Length``, else as its bytes arrive.

    A chunked body (or one longer than it said) is counted message by message; past the limit the
    client gets 413 with ``Connection: close`` (the server then closes the connection instead of
    reading the rest), and the app is told the client went away (Django's ``read_body`` raises
    ``RequestAborted``; whatever it sends after that is dropped). Nothing past the limit is kept in
    memory or spooled to disk.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        on_refused: Callable[[Scope, str], None] | None = None,
        larger: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_refused = on_refused  # told of each refusal (reported as the program's call)
        # Paths with a limit of their own (POST /api/jobs' uploads); every other path has max_bytes.
        self.larger = larger or {}

    def limit(self, scope: Scope) -> int:
        return self.larger.get(scope["path"], self.max_bytes)  # type: ignore[typeddict-item]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared, chunked = body_framing(scope)
        if declared is not None and declared > self.limit(scope):
            await self._refuse(scope, send)
            return
        if not chunked:
            # Content-Length framing (the server delivers exactly that many bytes) or no body at all.
            await self.app(scope, receive, send)
            return
        await _CountedBody(self, scope, receive, send).run()

    async def _refuse(self, scope: Scope, send: Send) -> None:
        detail = f"Request body is larger than {self.limit(scope)} bytes"
        if self.on_refused is not None:
            self.on_refused(scope, detail)
        await send_json(send, 413, {"detail": detail}, [(b"connection", b"close")])


class _CountedBody:
    """One request whose body is counted as it arrives (no trustworthy Content-Length)."""

    def __init__(self, limit: BodyLimitMiddleware, scope: Scope, receive: Receive, send: Send) -> None:
        self.limit = limit
        self.scope = scope
        self._receive = receive
        self._send = send
        self.seen = 0
        self.max_bytes = limit.limit(scope)
        self.started = False  # the app began its answer: too late for a 413
        self.refused = False  # past the limit: the app reads a disconnect from now on
        self.answered = False  # the 413 was sent: the app's own answer is dropped

    async def run(self) -> None:
        await self.limit.app(self.scope, self.receive, self.send)

    async def receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.max_bytes:
                self.refused = True
                if not self.started:
                    self.answered = True
                    await self.limit._refuse(self.scope, self._send)
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self.answered:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)
