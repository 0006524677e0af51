"""Async-only middleware.

The API path must not pay for Django's ``MiddlewareMixin`` classes: under ASGI each one costs two
thread hops per request. They are still needed by the admin and the HTML pages, so
:class:`BrowserMiddleware` builds that stack once and applies it only to browser paths.
"""

from collections.abc import Awaitable, Callable

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
    for header in ("Allow", "Retry-After", "WWW-Authenticate"):
        if header in response:
            converted[header] = response[header]
    return converted
