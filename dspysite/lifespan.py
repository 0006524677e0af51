"""Pure ASGI layers around Django's handler.

Django's ASGI handler does not answer the ``lifespan`` protocol, so start-up and shutdown hooks
(thread pools, telemetry flush) are run here. Oversized bodies are refused from the
``Content-Length`` header before Django spools them.
"""

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Hook = Callable[[], Awaitable[None]]


class LifespanMiddleware:
    def __init__(self, app: ASGIApp, on_startup: list[Hook], on_shutdown: list[Hook]) -> None:
        self.app = app
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._run("startup", self.on_startup, send)
            elif message["type"] == "lifespan.shutdown":
                await self._run("shutdown", self.on_shutdown, send)
                return

    async def _run(self, phase: str, hooks: list[Hook], send: Send) -> None:
        try:
            for hook in hooks:
                await hook()
        except Exception as exc:
            logger.exception("lifespan %s failed", phase)
            await send({"type": f"lifespan.{phase}.failed", "message": str(exc)})
            return
        await send({"type": f"lifespan.{phase}.complete"})


class BodyLimitMiddleware:
    """413 at once for a declared body over the limit (chunked bodies are checked by Django)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, on_refused: Callable[[Scope, str], None] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_refused = on_refused  # told of each refusal (telemetry records it)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._declared_length(scope) > self.max_bytes:
            detail = f"Request body is larger than {self.max_bytes} bytes"
            if self.on_refused is not None:
                self.on_refused(scope, detail)
            body = json.dumps({"detail": detail}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 413, "headers": headers})
            await send({"type": "http.response.body", "body": body})
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
