"""The server span of each HTTP request (HTTP semantic conventions), when tracing is on.

:func:`traced` wraps the ASGI application in :class:`ServerSpans`, a pure ASGI layer, only when
``telemetry.tracing.configured()``: off, the request path does not even pass through it. It takes
the client's W3C ``traceparent`` (the global propagator: ``OTEL_PROPAGATORS``, trace context and
baggage by default), so the server span is the client's span's child, and makes the span current
for everything below it (Django, the program span, ``/mcp``). The response's status and
``X-Request-ID`` are read from the ``http.response.start`` message.

:class:`RouteNaming`, an async-only Django middleware that removes itself when tracing is off,
names the span after the route Django matched (``POST /SimplePredict``, ``http.route``): only
Django knows it, and reading ``request.resolver_match`` after the view costs nothing.
"""

import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from asgiref.typing import (
    ASGI3Application,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    HTTPResponseStartEvent,
    HTTPScope,
    Scope,
)
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.datastructures import Headers

from telemetry import tracing

REQUEST_ID_HEADER = b"x-request-id"


def traced(app: ASGI3Application) -> ASGI3Application:
    """``app`` inside a :class:`ServerSpans` layer when tracing is configured, else ``app`` itself."""
    return ServerSpans(app) if tracing.configured() else app


def excluded_paths() -> re.Pattern[str] | None:
    """``OTEL_PYTHON_EXCLUDED_URLS`` (comma-separated regular expressions, as OpenTelemetry's
    instrumentations read it): paths that get no span, e.g. ``health/,metrics``."""
    patterns = [part.strip() for part in os.environ.get("OTEL_PYTHON_EXCLUDED_URLS", "").split(",")]
    patterns = [pattern for pattern in patterns if pattern]
    return re.compile("|".join(f"(?:{pattern})" for pattern in patterns)) if patterns else None


class ServerSpans:
    """A SERVER span around each HTTP request, child of the client's ``traceparent``."""

    def __init__(self, app: ASGI3Application) -> None:
        self.app = app
        self.excluded = excluded_paths()
        self.propagated = propagate.get_global_textmap().fields

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        tracer = tracing.active_tracer()
        if tracer is None or scope["type"] != "http" or self._excluded(scope["path"]):
            await self.app(scope, receive, send)
            return
        carrier, attributes = self._from_headers(scope)
        parent = propagate.extract(carrier) if carrier else None
        span = tracer.start_span(scope["method"], parent, kind=SpanKind.SERVER, attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        status: list[int] = []

        async def send_traced(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                _response_attributes(span, message)
            await send(message)

        try:
            await self.app(scope, receive, send_traced)
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            raise
        finally:
            if status and status[0] >= 500:  # a server error; 4xx are the client's (HTTP conventions)
                span.set_attribute("error.type", str(status[0]))
                span.set_status(Status(StatusCode.ERROR))
            span.end()
            otel_context.detach(token)

    def _excluded(self, path: str) -> bool:
        return self.excluded is not None and self.excluded.search(path) is not None

    def _from_headers(self, scope: HTTPScope) -> tuple[dict[str, str], dict[str, Any]]:
        """The propagation headers (``traceparent``...) and the span's request attributes."""
        headers = Headers(scope=scope)  # type: ignore[arg-type]
        carrier = {name: headers[name] for name in self.propagated if name in headers}
        attributes: dict[str, Any] = {
            "http.request.method": scope["method"],
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
        }
        if client := scope.get("client"):
            attributes["client.address"] = client[0]
        if server := scope.get("server"):
            attributes["server.address"], attributes["server.port"] = server[0], server[1]
        if "user-agent" in headers:
            attributes["user_agent.original"] = headers["user-agent"]
        return carrier, attributes


def _response_attributes(span: trace.Span, message: HTTPResponseStartEvent) -> None:
    span.set_attribute("http.response.status_code", message["status"])
    # Not starlette's Headers: Django sends header names as they were set (``X-Request-ID``), and
    # Headers looks up lowercased names only.
    for name, value in message.get("headers", ()):
        if name.lower() == REQUEST_ID_HEADER:
            span.set_attribute("dspy.request_id", value.decode("latin-1"))
            break


GetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


class RouteNaming:
    """Django middleware: the server span's ``http.route`` and name from the matched URL pattern."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        if not tracing.configured():
            raise MiddlewareNotUsed
        if not iscoroutinefunction(get_response):
            raise TypeError("RouteNaming needs an async handler (serve through ASGI)")
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = await self.get_response(request)
        match = request.resolver_match
        if match is not None and match.route:
            span = trace.get_current_span()
            if span.is_recording():
                route = "/" + match.route
                span.set_attribute("http.route", route)
                span.update_name(f"{request.method} {route}")
        return response
