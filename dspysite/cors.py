"""CORS for the API: django-cors-headers' middleware, with this project's origins and paths.

django-cors-headers writes the headers (methods, headers, exposed headers and max age are its
``CORS_*`` settings in ``dspysite/settings.py``). Its middleware is async-capable: under ASGI it
is awaited on the event loop like the project's own async-only middleware, with no thread hop
(``tests/dspysite/test_cors.py`` counts the threads an API request starts: none). This subclass adds
what the contract needs and the library's settings cannot say:

* the origins: ``CORS_ALLOWED_ORIGINS`` (environment, comma list, ``*`` for any) and/or
  ``server.cors_allowed_origins`` in dspy.config.yaml, read once at start-up;
* none configured: the middleware removes itself from the chain (``MiddlewareNotUsed``), so the
  API path pays nothing;
* browser paths (admin, playground) get no CORS headers;
* a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from an allowed origin is
  answered here, 204; any other ``OPTIONS`` goes on to the route (405 on program routes).

Cookies are never allowed cross-origin (``CORS_ALLOW_CREDENTIALS`` stays off: API keys travel in
the ``Authorization`` header). An allowed origin is echoed in ``Access-Control-Allow-Origin``,
with ``Vary: Origin`` (also for ``*``).
"""

from collections.abc import Awaitable, Callable
from urllib.parse import SplitResult

from corsheaders.middleware import CorsMiddleware as LibraryCorsMiddleware
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from dspysite.env import env_list
from dspysite.middleware import is_browser_path


def allowed_origins() -> frozenset[str]:
    from programs.runtime import get_runtime

    configured = get_runtime().config.config.server.cors_allowed_origins
    return frozenset(origin.rstrip("/") for origin in [*env_list("CORS_ALLOWED_ORIGINS", []), *configured])


class CorsMiddleware(LibraryCorsMiddleware):
    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]]) -> None:
        self.origins = allowed_origins()
        if not self.origins:
            raise MiddlewareNotUsed
        self.any_origin = "*" in self.origins
        super().__init__(get_response)
        if not self.async_mode:
            raise TypeError("CorsMiddleware needs an async handler (serve through ASGI)")

    def is_enabled(self, request: HttpRequest) -> bool:
        return not is_browser_path(request.path)

    def origin_found_in_white_lists(self, origin: str, url: SplitResult) -> bool:
        return self._allowed(origin)

    def check_preflight(self, request: HttpRequest) -> HttpResponseBase | None:
        response = super().check_preflight(request)
        origin = request.headers.get("Origin")
        if response is None or origin is None or not self._allowed(origin):
            return None  # not a preflight answered here: the route answers (405 for OPTIONS)
        response.status_code = 204
        return response

    def _allowed(self, origin: str) -> bool:
        return self.any_origin or origin.rstrip("/") in self.origins
