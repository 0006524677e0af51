"""``/mcp`` as a pure ASGI layer in front of Django: the SDK's Streamable HTTP transport, stateless.

Stateless (``stateless_http``): every POST is served on its own, by whichever worker process or
machine receives it, so nothing a session needs lives in one process's memory and a plain load
balancer is enough. JSON responses (``json_response``): a call is one POST answered by one JSON
object, no event stream to keep open. Both protocol eras the SDK speaks are served: clients of
the 2026-07-28 revision (one self-contained request, no handshake) and clients that still begin
with ``initialize`` (2024-11-05 to 2025-11-25).

Before the SDK sees a request, this layer checks, answering in JSON like every other error:

* Host and Origin, with the SDK's own DNS-rebinding protection (``TransportSecuritySettings``):
  the hosts of Django's ``ALLOWED_HOSTS`` on any port, plus ``MCP_ALLOWED_HOSTS`` and
  ``MCP_ALLOWED_ORIGINS`` in the SDK's syntax (``host``, ``host:port``, ``host:*``). An unknown
  Host is 421, an unknown Origin 403; ``ALLOWED_HOSTS=*`` turns the check off, as for Django.
* GET, the request for an event stream of server-initiated messages: 405, since a stateless
  server has none to send (the SDK would hold such a stream open, empty, until the client leaves).
* The API key, when keys are on (``server.auth``): ``Authorization: Bearer <key>`` or 401 with
  ``WWW-Authenticate``; a key without the ``invoke`` scope: 403. The caller is left in the
  scope's state for the tool call's log row.
* The key's quotas, through the doors' one reservation (``programs.reservations.quota_reserved``,
  which :mod:`apikeys.quotas` plugs into): each POST is one request against ``rpm`` and
  ``max_in_flight``, its slot freed when the answer is sent; the tool call's LM calls reserve the
  key's tokens and dollars one by one (the reservation's LM-call gate, bound in the tool call's
  task by :mod:`mcp_tools.server`). Over a quota: 429 with ``Retry-After`` and the ``RateLimit``
  headers, which every answer carries.

The session manager's task group is opened by the server's lifespan (:meth:`McpEndpoint.running`
in ``dspysite/asgi.py``) and closed at shutdown, after uvicorn has let in-flight requests finish.
"""

from contextlib import AbstractAsyncContextManager

from django.conf import settings
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.requests import Request

from apikeys.auth import UNAUTHORIZED, WWW_AUTHENTICATE, ScopeMissing, bearer_caller
from apikeys.context import INVOKE
from dspysite.lifespan import ASGIApp, Message, Receive, Scope, Send, header, send_json
from mcp_tools.server import CALLER_STATE, RESERVATION_STATE, build_server
from programs.reservations import QuotaRefused, QuotaReservation, quota_reserved
from programs.runtime import Runtime

PATHS = frozenset({"/mcp", "/mcp/"})
NO_STREAM = "This MCP endpoint is stateless and opens no event stream: POST each JSON-RPC request"


class McpEndpoint:
    def __init__(
        self,
        app: ASGIApp,
        manager: StreamableHTTPSessionManager,
        security: TransportSecuritySettings,
        auth: bool,
    ) -> None:
        self.app = app  # everything that is not /mcp
        self.manager = manager
        self.security = TransportSecurityMiddleware(security)
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in PATHS:
            await self.app(scope, receive, send)
            return
        refused = await self.security.validate_request(Request(scope), is_post=scope["method"] == "POST")
        if refused is not None:
            await send_json(send, refused.status_code, {"detail": bytes(refused.body).decode()})
            return
        if scope["method"] == "GET":  # a stateless server has nothing to send on an event stream
            await send_json(send, 405, {"detail": NO_STREAM}, [(b"allow", b"POST")])
            return
        if self.auth:
            caller = await bearer_caller(header(scope, b"authorization").decode("latin-1"))
            if caller is None:
                await send_json(
                    send, 401, {"detail": UNAUTHORIZED}, [(b"www-authenticate", WWW_AUTHENTICATE.encode())]
                )
                return
            if not caller.may(INVOKE):  # every tool runs a program
                await send_json(send, 403, {"detail": str(ScopeMissing(INVOKE, caller))})
                return
            scope.setdefault("state", {})[CALLER_STATE] = caller
            try:
                async with quota_reserved(caller) as reservation:
                    await self.manager.handle_request(scope, receive, _answering(scope, send, reservation))
            except QuotaRefused as refused:
                headers = [(name.lower().encode(), value.encode()) for name, value in refused.headers.items()]
                await send_json(send, refused.status, refused.body(), headers)
            return
        await self.manager.handle_request(scope, receive, send)

    def running(self) -> AbstractAsyncContextManager[None]:
        """The session manager's task group, for the lifespan: open from start-up to shutdown."""
        return self.manager.run()


def mcp_endpoint(app: ASGIApp, runtime: Runtime) -> McpEndpoint:
    manager = StreamableHTTPSessionManager(
        app=build_server(runtime),
        json_response=True,
        stateless=True,
        security_settings=None,  # checked in front (McpEndpoint), so the refusals are JSON
        max_request_body_size=settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
    )
    return McpEndpoint(app, manager, transport_security(), runtime.config.config.server.auth)


def transport_security() -> TransportSecuritySettings:
    """Host and Origin values /mcp accepts (docs/MCP.md, "Host names")."""
    django_hosts = [host.lstrip(".") for host in settings.ALLOWED_HOSTS]  # ".example.com": the domain itself
    if "*" in django_hosts:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    hosts = [pattern for host in django_hosts for pattern in (host, f"{host}:*")]
    origins = [f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[*hosts, *settings.MCP_ALLOWED_HOSTS],
        allowed_origins=[*origins, *settings.MCP_ALLOWED_ORIGINS],
    )


def _answering(scope: Scope, send: Send, reservation: QuotaReservation | None) -> Send:
    """``send``, with the reservation's headers on the answer, settled before its last byte is sent
    (so the client's next request sees it settled)."""
    if reservation is None:
        return send
    scope["state"][RESERVATION_STATE] = reservation  # its LM-call gate, for the tool calls (mcp_tools.server)
    extra = [(name.lower().encode(), value.encode()) for name, value in reservation.headers.items()]

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            await reservation.settle()
        await send(message)

    return send_with_headers
