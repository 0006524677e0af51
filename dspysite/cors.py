"""CORS for the API, async-only: ``CORS_ALLOWED_ORIGINS`` (comma list, ``*`` for any) and/or
``server.cors_allowed_origins`` in dspy.config.yaml.

With no origin configured the middleware removes itself from the chain (``MiddlewareNotUsed``):
the API path pays nothing. Preflight requests (``OPTIONS`` with ``Access-Control-Request-Method``)
from an allowed origin are answered here, 204; other responses to an allowed origin get
``Access-Control-Allow-Origin``. Cookies are never allowed cross-origin (API keys travel in the
``Authorization`` header). Browser paths (admin, playground) get no CORS headers.
"""

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from dspysite.env import env_list
from dspysite.middleware import is_browser_path

ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, X-Request-ID"
EXPOSE_HEADERS = "X-Request-ID, Retry-After, WWW-Authenticate"
MAX_AGE_S = "600"


def allowed_origins() -> frozenset[str]:
    from programs.runtime import get_runtime

    configured = get_runtime().config.config.server.cors_allowed_origins
    return frozenset(origin.rstrip("/") for origin in [*env_list("CORS_ALLOWED_ORIGINS", []), *configured])


class CorsMiddleware:
    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]]) -> None:
        if not iscoroutinefunction(get_response):
            raise TypeError("CorsMiddleware needs an async handler (serve through ASGI)")
        self.origins = allowed_origins()
        if not self.origins:
            raise MiddlewareNotUsed
        self.any_origin = "*" in self.origins
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        origin = request.headers.get("Origin")
        if origin is None or is_browser_path(request.path) or not self._allowed(origin):
            return await self.get_response(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response: HttpResponseBase = HttpResponse(status=204)
            response["Access-Control-Allow-Methods"] = ALLOW_METHODS
            response["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            response["Access-Control-Max-Age"] = MAX_AGE_S
        else:
            response = await self.get_response(request)
            response["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        response["Access-Control-Allow-Origin"] = "*" if self.any_origin else origin
        if not self.any_origin:
            response["Vary"] = "Origin"
        return response

    def _allowed(self, origin: str) -> bool:
        return self.any_origin or origin.rstrip("/") in self.origins
