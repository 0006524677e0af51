"""Async-only middleware.

The API path must not pay for Django's ``MiddlewareMixin`` classes: under ASGI each one costs two
thread hops per request. They are still needed by the admin and the HTML pages, so
:class:`BrowserMiddleware` builds that stack once and applies it only to browser paths.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import TypeVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase, StreamingHttpResponse
from django.utils.decorators import async_only_middleware
from django.utils.module_loading import import_string

T = TypeVar("T")
GetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


def is_browser_path(path: str) -> bool:
    # "/" exactly is the playground's index; "/programs", "/<Program>"... stay on the API path.
    if path == "/":
        return True
    return path.startswith(settings.BROWSER_PATH_PREFIXES) or path.rstrip("/") in ("/admin", "/ui")


class BrowserMiddleware:
    """Run ``settings.BROWSER_MIDDLEWARE`` for the admin and HTML pages, skip it for the API."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        if not iscoroutinefunction(get_response):
            raise TypeError("BrowserMiddleware needs an async handler (serve through ASGI)")
        self.get_response = get_response
        handler: Callable = get_response
        for path in reversed(settings.BROWSER_MIDDLEWARE):
            handler = import_string(path)(handler)
        self.browser_handler = handler
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if is_browser_path(request.path):
            return await self.browser_handler(request)
        return await self.get_response(request)


class RequestLifetime:
    """What a request's code holds until its answer is sent: async contexts, and headers for it.

    How app code holds something for a request's whole answer without the serving core knowing
    it: the API-key check enters the key's quota reservation here (``programs.reservations``).
    """

    __slots__ = ("_closing", "headers", "stack")

    def __init__(self) -> None:
        self.stack = AsyncExitStack()
        self.headers: dict[str, str] = {}
        self._closing: asyncio.Task[None] | None = None

    async def enter(self, context: AbstractAsyncContextManager[T]) -> T:
        """Enter ``context`` now; it is left when the answer has been sent or the request ended."""
        return await self.stack.enter_async_context(context)

    async def close(self) -> None:
        await self.stack.aclose()

    def close_soon(self) -> None:
        """:meth:`close` in a task of its own (the request is being cancelled, or its body closed)."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self.close())
            _closing.add(self._closing)
            self._closing.add_done_callback(_closing.discard)

    async def closing_after(self, content: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """A streamed body that closes the lifetime after its last chunk (or when it is cut off)."""
        try:
            async for chunk in content:
                yield chunk
        except BaseException:
            self.close_soon()
            raise
        await self.close()


_closing: set[asyncio.Task[None]] = set()  # strong references: the loop holds tasks weakly
_LIFETIME = "dspy_request_lifetime"


def request_lifetime(request: HttpRequest) -> RequestLifetime:
    """The request's :class:`RequestLifetime` (made on first use: most requests never need one)."""
    lifetime: RequestLifetime | None = getattr(request, _LIFETIME, None)
    if lifetime is None:
        lifetime = RequestLifetime()
        setattr(request, _LIFETIME, lifetime)
    return lifetime


@async_only_middleware
def request_lifetime_middleware(get_response: GetResponse) -> GetResponse:
    """Close the request's :class:`RequestLifetime`, if its code made one, when the answer is sent.

    Its headers go onto the response first. A plain response: closed before it is returned (so the
    next request of the same client sees what it settled); a streamed one: after its last chunk;
    no response (the request was cancelled or failed): in a task of its own.
    """

    async def middleware(request: HttpRequest) -> HttpResponseBase:
        try:
            response = await get_response(request)
        except BaseException:
            lifetime: RequestLifetime | None = getattr(request, _LIFETIME, None)
            if lifetime is not None:
                lifetime.close_soon()
            raise
        lifetime = getattr(request, _LIFETIME, None)
        if lifetime is None:
            return response
        for name, value in lifetime.headers.items():
            response[name] = value
        if isinstance(response, StreamingHttpResponse):
            response.streaming_content = lifetime.closing_after(response.streaming_content)
        else:
            await lifetime.close()
        return response

    return middleware


@async_only_middleware
def json_errors_middleware(get_response: GetResponse) -> GetResponse:
    """Turn Django's HTML error pages (404, 405, 400...) into ``{"detail": ...}`` on API paths.

    django-ninja already answers its own errors in JSON; this covers what happens before a ninja
    operation runs: an unknown path, a wrong method, a body Django refused.
    """

    async def middleware(request: HttpRequest) -> HttpResponseBase:
        response = await get_response(request)
        if response.status_code < 400 or is_browser_path(request.path):
            return response
        if response.get("Content-Type", "").startswith("application/json"):
            return response
        return _json_error(request, response)

    return middleware


def _json_error(request: HttpRequest, response: HttpResponseBase) -> JsonResponse:
    detail = response.reason_phrase
    if response.status_code == 404:
        detail = f"Not found: {request.path}. GET /programs lists the programs and their endpoints."
    elif response.status_code == 405:
        detail = f"Method {request.method} not allowed on {request.path}; allowed: {response.get('Allow')}"
    converted = JsonResponse({"detail": detail}, status=response.status_code)
    for header in ("Allow", "Retry-After", "WWW-Authenticate", "RateLimit-Policy", "RateLimit"):
        if header in response:
            converted[header] = response[header]
    return converted
