"""The API-key check on the program and metrics routes, built to stay off the database.

Off (the default) it does not exist: :func:`api_key_auth` returns ``None`` and the routes carry
no auth at all. On (``server.auth: true`` in dspy.config.yaml, or ``DSPY_AUTH=true``):

* ``Authorization: Bearer <key>`` is hashed (SHA-256) and looked up in an in-memory table of the
  active keys' hashes. The table is reloaded from the database at most every
  ``API_KEY_CACHE_TTL_S`` seconds (default 5) by the first request that finds it stale, in one
  query, off the event loop; a key that is not in the table triggers a reload at most once per
  ``API_KEY_MISS_RELOAD_S`` (default 1) so a key created a moment ago works at once. So a revoked
  key is refused by every process within the TTL, an expired one immediately (its expiry is in
  the table), and a flood of wrong keys costs at most one query per second.
* Without an ``Authorization`` header, a logged-in staff session (the playground) is accepted
  when the request carries Django's CSRF token: a page of another site cannot call with it.
* Anything else is 401 ``{"detail": ...}`` with ``WWW-Authenticate: Bearer`` (see :func:`install`).

The caller is kept in :data:`apikeys.context.current_caller` for the call's telemetry record.
Then its scopes (docs/DEPLOYMENT.md, "Who can read what"): ``invoke`` at a program door, ``read``
on telemetry's routes (``admin`` may do all), else 403 JSON naming the scope; staff sessions are
``admin``. A key's quotas (:mod:`apikeys.quotas`) are taken right after, at program doors.
"""

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from functools import cache
from importlib import import_module
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import aget_user
from django.db import connections
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone
from ninja import NinjaAPI
from ninja.errors import AuthenticationError
from ninja.security import HttpBearer

from apikeys.context import ALL_SCOPES, INVOKE, Caller, Quota, current_caller
from dspysite.env import env_float
from dspysite.middleware import request_lifetime
from programs.reservations import QuotaRefused, quota_reserved

if TYPE_CHECKING:
    from programs.runtime import Runtime

logger = logging.getLogger(__name__)

CACHE_TTL_S = env_float("API_KEY_CACHE_TTL_S", 5.0)
MISS_RELOAD_S = env_float("API_KEY_MISS_RELOAD_S", 1.0)
UNAUTHORIZED = "Missing or invalid API key: send `Authorization: Bearer <key>`"
WWW_AUTHENTICATE = 'Bearer realm="api"'


def active_keys() -> dict[str, Caller]:
    """The active keys by hash (one query). Runs in a worker thread: closes that thread's connection."""
    from apikeys.models import ApiKey

    try:
        rows = ApiKey.objects.filter(revoked_at__isnull=True).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
        )
        fields = ("id", "name", "prefix", "key_hash", "expires_at", "scopes", *QUOTA_FIELDS)
        return {
            key_hash: Caller(
                key_id,
                f"{name} (dsk_{prefix})",
                _timestamp(expires_at),
                _quota(*limits),
                _scopes(scopes),
            )
            for key_id, name, prefix, key_hash, expires_at, scopes, *limits in rows.values_list(*fields)
        }
    finally:
        connections.close_all()  # no request cycle will close a connection opened in this thread


QUOTA_FIELDS = ("rpm", "tokens_per_day", "budget_usd", "max_in_flight")


def _quota(
    rpm: int | None, tokens: int | None, budget: Decimal | None, in_flight: int | None
) -> Quota | None:
    """The key's quotas; ``max_in_flight`` unset: ``API_KEY_DEFAULT_MAX_IN_FLIGHT`` (0: none)."""
    if in_flight is None:
        in_flight = settings.API_KEY_DEFAULT_MAX_IN_FLIGHT or None
    quota = Quota(rpm, tokens, float(budget) if budget is not None else None, in_flight)
    return quota or None


@cache
def _scopes(text: str) -> frozenset[str]:
    return frozenset(part.strip() for part in text.split(",") if part.strip())


def _timestamp(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


class KeyCache:
    """The active keys' hashes in memory, reloaded by the first request that finds them stale."""

    def __init__(
        self,
        ttl_s: float = CACHE_TTL_S,
        miss_reload_s: float = MISS_RELOAD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.ttl_s = ttl_s
        self.miss_reload_s = miss_reload_s
        self.keys: dict[str, Caller] = {}
        self.loaded_at = float("-inf")  # clock() at the last load
        self.loads = 0
        self._loading: asyncio.Task[None] | None = None

    async def lookup(self, token: str) -> Caller | None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        if self.clock() - self.loaded_at > self.ttl_s:
            await self.reload()
        caller = self.keys.get(digest)
        if caller is None and self.clock() - self.loaded_at > self.miss_reload_s:
            await self.reload()
            caller = self.keys.get(digest)
        if caller is None or caller.expired(time.time()):
            return None
        return caller

    async def reload(self) -> None:
        """One load at a time; concurrent callers wait for the same one."""
        loop = asyncio.get_running_loop()
        task = self._loading
        if task is None or task.done() or task.get_loop() is not loop:
            task = self._loading = loop.create_task(self._load())
        await asyncio.shield(task)  # a caller that goes away does not cancel the others' load

    async def _load(self) -> None:
        try:
            keys = await sync_to_async(active_keys, thread_sensitive=False)()
        except Exception:  # keep serving with the keys already known
            logger.exception("Could not load the API keys; keeping the %d already loaded", len(self.keys))
        else:
            self.keys = keys
            self.loads += 1
        self.loaded_at = self.clock()


KEYS = KeyCache()


class ApiKeyAuth(HttpBearer):
    """ninja auth: a Bearer API key, or the playground's staff session with its CSRF token.

    Then the key's scope: ``invoke`` on a program door (the route table's), ``scope`` on every
    other route of this auth (``read`` for telemetry; None: any valid key); without it, 403. A
    key with quotas is admitted at a program door too (:mod:`apikeys.quotas`): over a quota,
    QuotaRefused becomes the 429 (or, Redis down and failing closed, the 503).
    """

    def __init__(self, scope: str | None = None) -> None:
        super().__init__()
        self.scope = scope

    async def __call__(self, request: HttpRequest) -> Caller | None:  # type: ignore[override]
        header = request.headers.get("Authorization")
        caller = await bearer_caller(header) if header else await session_caller(request)
        if caller is None:
            return None
        current_caller.set(caller)
        door = get_runtime().routes.door(request.method, request.path)
        required = INVOKE if door is not None else self.scope
        if required is not None and not caller.may(required):
            raise ScopeMissing(required, caller)
        if door is not None and caller.quota is not None:
            await reserve_quota(request, caller)
        return caller

    async def authenticate(self, request: HttpRequest, token: str) -> Caller | None:
        """HttpBearer's hook, unused by ``__call__``; being a coroutine makes ninja await the check."""
        return await KEYS.lookup(token)


async def reserve_quota(request: HttpRequest, caller: Caller) -> None:
    """The HTTP doors' quota reservation (raises QuotaRefused), held until the answer is sent."""
    lifetime = request_lifetime(request)
    reservation = await lifetime.enter(quota_reserved(caller))
    if reservation is not None:
        lifetime.headers.update(reservation.headers)


async def bearer_caller(authorization: str) -> Caller | None:
    """The active key an ``Authorization: Bearer <key>`` header carries, if it carries one."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return await KEYS.lookup(token.strip())


async def session_caller(request: HttpRequest) -> Caller | None:
    """A logged-in staff user of the playground, if the request is not a cross-site forgery."""
    session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
    if not session_key or not _csrf_ok(request):
        return None
    engine = import_module(settings.SESSION_ENGINE)
    request.session = engine.SessionStore(session_key)  # type: ignore[attr-defined]
    user = await aget_user(request)
    if not (user.is_active and user.is_staff):
        return None
    return Caller(None, f"user {user.get_username()}", scopes=ALL_SCOPES)  # staff: admin


def _csrf_ok(request: HttpRequest) -> bool:
    """Django's own CSRF check (the token header against the cookie, and the Origin)."""
    check = CsrfViewMiddleware(_unused_get_response)
    return check.process_view(request, None, (), {}) is None


def _unused_get_response(request: HttpRequest) -> HttpResponse:
    raise AssertionError("not called")  # pragma: no cover


def auth_enabled() -> bool:
    return get_runtime().config.config.server.auth


def get_runtime() -> "Runtime":
    """The loaded service (imported late: loading DSPy is not needed to check a key)."""
    from programs.runtime import get_runtime as runtime

    return runtime()


def api_key_auth(scope: str | None = None) -> ApiKeyAuth | None:
    """The auth for protected routes: None (no check at all) unless API keys are on.

    ``scope``: what a key needs on these routes besides a program door's ``invoke`` (None: any key).
    """
    return ApiKeyAuth(scope) if auth_enabled() else None


class ScopeMissing(Exception):
    """A valid key without the scope a route needs: 403 (apikeys.auth.install)."""

    def __init__(self, scope: str, caller: Caller) -> None:
        has = ", ".join(sorted(caller.scopes)) or "none"
        super().__init__(f"This API key lacks the `{scope}` scope (it has: {has})")


def docs_decorator() -> Callable[[Callable[..., HttpResponse]], Callable[..., Any]] | None:
    """``/openapi.json`` and ``/docs`` behind a key (or a staff session) when keys are on, unless
    ``DSPY_PUBLIC_DOCS`` publishes them: the document lists every program and its schemas."""
    if not auth_enabled() or settings.DSPY_PUBLIC_DOCS:
        return None

    def behind_keys(view: Callable[..., HttpResponse]) -> Callable[..., Any]:
        async def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            header = request.headers.get("Authorization")
            caller = await bearer_caller(header) if header else await session_caller(request)
            if caller is None:
                response = JsonResponse({"detail": UNAUTHORIZED}, status=401)
                response["WWW-Authenticate"] = WWW_AUTHENTICATE
                return response
            # ninja's views are sync and touch no database: the schema is built on the event loop.
            return view(request, *args, **kwargs)

        return guarded

    return behind_keys


def install(api: NinjaAPI) -> None:
    """401 answers carry ``WWW-Authenticate: Bearer`` and say what to send; 403 names the scope."""

    @api.exception_handler(AuthenticationError)
    def unauthorized(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        response = JsonResponse({"detail": UNAUTHORIZED}, status=401)
        response["WWW-Authenticate"] = WWW_AUTHENTICATE
        return response

    @api.exception_handler(ScopeMissing)
    def forbidden(request: HttpRequest, exc: ScopeMissing) -> HttpResponse:
        return JsonResponse({"detail": str(exc)}, status=403)

    @api.exception_handler(QuotaRefused)
    def over_quota(request: HttpRequest, exc: QuotaRefused) -> HttpResponse:
        return JsonResponse(exc.body(), status=exc.status, headers=exc.headers)
