"""Async-only middleware.

The API path must not pay for Django's ``MiddlewareMixin`` classes: under ASGI each one costs two
thread hops per request. They are still needed by the admin and the HTML pages, so
:class:`BrowserMiddleware` builds that stack once and applies it only to browser paths.
"""

from collections.abc import Awaitable, Callable
from typing import Protocol

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase
from django.utils.decorators import async_only_middleware
from django.utils.module_loading import import_string

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


# The attribute a view's code (an auth, for instance) sets on the request to see its response.
RESPONSE_HOOK = "dspy_response_hook"


class ResponseHook(Protocol):
    """Told about the request's end: the API keys' quotas add their headers and settle there."""

    async def on_response(self, response: HttpResponseBase) -> None:
        """The response, before it is sent: may add headers (and wrap a streaming body)."""

    def on_abort(self) -> None:
        """No response: the request was cancelled (client gone) or failed before Django answered."""


@async_only_middleware
def response_hook_middleware(get_response: GetResponse) -> GetResponse:
    """Run the request's :class:`ResponseHook`, if its code set one: headers onto the response.

    How app code reaches the response without the serving core (``programs/``) knowing it: the
    API-key check stores its quota admission under :data:`RESPONSE_HOOK`.
    """

    async def middleware(request: HttpRequest) -> HttpResponseBase:
        try:
            response = await get_response(request)
        except BaseException:
            hook: ResponseHook | None = getattr(request, RESPONSE_HOOK, None)
            if hook is not None:
                hook.on_abort()
            raise
        hook = getattr(request, RESPONSE_HOOK, None)
        if hook is not None:
            await hook.on_response(response)
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
