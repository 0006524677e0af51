"""Pure ASGI layers that refuse a request before Django sees it: a foreign ``Host``, a program call
whose body is not JSON.

* :class:`TrustedHosts`: ``Host`` against ``ALLOWED_HOSTS`` on every path (Django's own rules:
  ``.example.com`` for a domain and its subdomains, ``*`` for any), 400 JSON otherwise. Django checks
  ``Host`` only when something asks for it (``request.get_host()``), which nothing on the API path
  does, so a DNS-rebinding page could read ``/api/logs`` of a server on the developer's machine.
  ``/mcp`` keeps its own check (the MCP SDK's 421/403) and the two health probes are exempt:
  orchestrators probe them by IP address.
* :class:`JsonBodies`: a program call with a body must say ``Content-Type: application/json`` (any
  ``+json`` type and parameters such as ``charset`` are fine): a web page can send ``text/plain``
  or a form to another origin without a CORS preflight, and the body used to be parsed as JSON all
  the same. 415 JSON says which header to send. Other paths (the playground's forms, the admin,
  ``/mcp``) are not touched.
* :class:`StaticFiles`: Django's static handler, with a path that leaves the static directories
  (``/static/../../etc/passwd``, encoded or not) answered 404 like any missing file, not 500.
"""

from collections.abc import Callable, Sequence

from asgiref.typing import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.exceptions import SuspiciousFileOperation
from django.http import Http404, HttpRequest, HttpResponseBase
from django.http.request import split_domain_port, validate_host

from dspysite.lifespan import body_framing, header, send_json

EXEMPT_PATHS = frozenset({"/mcp", "/mcp/", "/health/live", "/health/ready"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
NOT_JSON = "Send the body as JSON, with the header `Content-Type: application/json`"
_CACHE_MAX = 256  # allowed Host values remembered (a wildcard admits any number of them)


def allowed_hosts(configured: Sequence[str], debug: bool) -> list[str]:
    """What Django itself accepts: with DEBUG on and nothing configured, the loopback names."""
    if configured or not debug:
        return list(configured)
    return [".localhost", "127.0.0.1", "[::1]"]


class TrustedHosts:
    def __init__(self, app: ASGI3Application, hosts: Sequence[str]) -> None:
        self.app = app
        self.hosts = list(hosts)
        self.allow_any = "*" in self.hosts
        self._allowed: set[bytes] = set()

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if self.allow_any or scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        host = header(scope, b"host")  # type: ignore[arg-type]
        if host in self._allowed or self._check(host):
            await self.app(scope, receive, send)
            return
        shown = host.decode("latin-1")[:100]
        await send_json(send, 400, {"detail": f"Host {shown!r} is not served here: add it to ALLOWED_HOSTS"})  # type: ignore[arg-type]

    def _check(self, host: bytes) -> bool:
        domain, _port = split_domain_port(host.decode("latin-1"))
        if not domain or not validate_host(domain, self.hosts):
            return False
        if len(self._allowed) < _CACHE_MAX:
            self._allowed.add(host)
        return True


class JsonBodies:
    def __init__(self, app: ASGI3Application, is_program_door: Callable[[str, str], bool]) -> None:
        self.app = app
        self.is_program_door = is_program_door

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in BODY_METHODS
            and _has_body(scope)
            and not is_json(header(scope, b"content-type"))  # type: ignore[arg-type]
            and self.is_program_door(scope["method"], scope["path"])
        ):
            # Its body is never read: the connection closes rather than read a large one to discard it.
            await send_json(send, 415, {"detail": NOT_JSON}, [(b"connection", b"close")])  # type: ignore[arg-type]
            return
        await self.app(scope, receive, send)


def is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


def _has_body(scope: Scope) -> bool:
    declared, chunked = body_framing(scope)  # type: ignore[arg-type]
    return chunked or bool(declared)


class StaticFiles(ASGIStaticFilesHandler):
    def serve(self, request: HttpRequest) -> HttpResponseBase:
        try:
            return super().serve(request)
        except SuspiciousFileOperation:  # outside every static directory: not one of ours
            raise Http404("Not Found") from None
