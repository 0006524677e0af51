"""API-key quotas, the same on every server: requests per minute, tokens per day, dollars, in flight.

An API key may carry four limits (``manage.py apikey create NAME --rpm N --tokens-per-day N
--budget-usd X --max-in-flight N``, or the admin), kept with the key in the key cache
(:mod:`apikeys.auth`), so checking them reads no database. Their state lives in the shared store
(:mod:`ratelimit`: Redis with ``REDIS_URL``, so every worker and machine counts against the same
numbers; in-process otherwise).

A program request with a quota is reserved by :func:`reserve` before anything runs, at every door
(the seam: :func:`programs.reservations.quota_reserved`, which this module plugs into):

1. In one atomic script (one round trip, all or nothing): ``max_in_flight``, a leased slot (a
   crashed worker's slot comes back when its lease expires); and
2. ``rpm``: one request; ``tokens_per_day``, ``budget_usd``: checked, not reserved (a key with
   nothing left is refused here). What a request spends is only known per LM call: the
   reservation's ``lm_gate`` (:mod:`apikeys.token_reservations`), which the seam binds for the
   request's calls, reserves and settles each one.
3. When the request is over (its response sent, failed, timed out or cut off by the client), the
   slot is released (one round trip).

Over a quota: 429 with ``Retry-After`` (when capacity comes back), ``RateLimit-Policy`` and
``RateLimit`` (serialized by ``http_sf``, below); every answer of a key with quotas carries both.
Store unreachable: ``server.limits_on_redis_error.keys`` (fail_closed by default: 503 with
``Retry-After``; fail_open: the request goes on unlimited, without RateLimit headers).
"""

import logging
import math
from functools import cache
from typing import TYPE_CHECKING

import http_sf
from prometheus_client import Counter

from apikeys import token_reservations
from apikeys.context import Caller, Quota
from dspysite.env import env_float
from programs import reservations
from programs.lm_gates import LMCallGate
from programs.reservations import QuotaRefused
from ratelimit import SlotClaim, Store, StoreUnavailable, failures, get_store
from ratelimit.windows import Charge, Decision

if TYPE_CHECKING:
    from programs.runtime import Runtime

logger = logging.getLogger(__name__)

MINUTE_S, DAY_S = 60, 86400
BUDGET_WINDOW_S = 30 * DAY_S
USD_MICROS = 1_000_000  # the headers' unit for dollars (SF Integers only)
# A slot's lease: longer than any request may run; a slot whose holder died comes back after it.
LEASE_MARGIN_S = env_float("API_KEY_LEASE_MARGIN_S", 60.0)
UNAVAILABLE_RETRY_S = 1

REFUSALS = Counter(
    "dspy_api_key_quota_refusals_total",
    "Requests refused by an API key's quota (unavailable: Redis down, failing closed)",
    ["quota"],
)
_refused = {name: REFUSALS.labels(name) for name in ("rpm", "tokens", "usd", "in_flight", "unavailable")}


class KeyQuotaReservation:
    """An API key's quotas taken for one request: its slot until :meth:`settle` frees it, its
    RateLimit headers, and the gate its LM calls reserve tokens and dollars through."""

    __slots__ = ("_done", "headers", "key_id", "lease", "lm_gate", "quota", "store")

    def __init__(self, store: Store, caller: Caller, lease: str | None, headers: dict[str, str]) -> None:
        self.store = store
        self.key_id = caller.key_id
        self.quota: Quota = caller.quota or Quota()
        self.lease = lease
        self.headers = headers
        self.lm_gate: LMCallGate | None = token_reservations.gate_for(caller)
        self._done = False

    async def settle(self) -> None:
        """Free the slot. Idempotent, never raises."""
        if self._done:
            return
        self._done = True
        if self.lease is None:
            return
        try:  # one round trip
            await self.store.arelease(quota_key(self.key_id, "inflight"), self.lease)
        except StoreUnavailable:  # logged by the store; the slot's lease expires by itself
            failures.limit_failed("keys", fail_mode())


async def reserve_for(caller: Caller) -> KeyQuotaReservation | None:
    """The seam's :class:`programs.reservations.Quotas` (installed by ApiKeysConfig.ready)."""
    if caller.quota is None:
        return None
    return await reserve(caller)


async def reserve(caller: Caller) -> KeyQuotaReservation:
    """Reserve the caller's quotas for one request, or raise :class:`QuotaRefused` (429 or 503)."""
    quota = caller.quota or Quota()
    store = get_store()
    try:
        return await _reserve(store, caller, quota)
    except StoreUnavailable as exc:
        if failures.limit_failed("keys", fail_mode()):
            return KeyQuotaReservation(store, caller, None, {})
        _refused["unavailable"].inc()
        detail = "API key quotas cannot be checked right now (the shared limit store is unavailable)"
        raise QuotaRefused(503, detail, {"Retry-After": str(UNAVAILABLE_RETRY_S)}) from exc


async def _reserve(store: Store, caller: Caller, quota: Quota) -> KeyQuotaReservation:
    """One round trip: the budgets (requests; tokens and dollars left) and the in-flight slot, all or none."""
    kinds, charges = _charges(caller.key_id, quota)
    slot = None
    if quota.max_in_flight is not None:
        claim = SlotClaim(quota_key(caller.key_id, "inflight"), quota.max_in_flight, lease_s())
        decisions, slot = await store.atake_with_slot(charges, claim)
    else:
        decisions = await store.atake_all(charges) if charges else []
    states = [_remaining(kind, decision) for kind, decision in zip(kinds, decisions, strict=True)]
    if slot is not None:
        states.append(remaining("in-flight", slot.remaining))
    if slot is not None and not slot.acquired and slot.remaining == 0:
        _refused["in_flight"].inc()
        detail = f"API key quota exceeded: {quota.max_in_flight} requests in flight at most"
        raise QuotaRefused(429, detail, _headers(quota, states, retry_after_s=1))
    if not all(decision.allowed for decision in decisions):  # all charged or none
        refused = [
            kind for kind, decision in zip(kinds, decisions, strict=True) if decision.retry_after_s > 0
        ]
        for kind in refused:
            _refused[kind].inc()
        retry_after_s = max(decision.retry_after_s for decision in decisions)
        detail = f"API key quota exceeded: {', '.join(_DESCRIPTIONS[kind](quota) for kind in refused)}"
        raise QuotaRefused(429, detail, _headers(quota, states, retry_after_s))
    lease = slot.lease_id if slot is not None else None
    return KeyQuotaReservation(store, caller, lease, _headers(quota, states))


def _charges(key_id: int | None, quota: Quota) -> tuple[list[str], list[Charge]]:
    """Tokens and dollars are charged 0 here: checked (and reported in the headers), not reserved."""
    kinds, charges = [], []
    if quota.rpm is not None:
        kinds.append("rpm")
        charges.append(Charge(quota_key(key_id, "rpm"), 1, quota.rpm, MINUTE_S))
    if quota.tokens_per_day is not None:
        kinds.append("tokens")
        charges.append(Charge(quota_key(key_id, "tokens"), 0, quota.tokens_per_day, DAY_S))
    if quota.budget_usd is not None:
        kinds.append("usd")
        charges.append(Charge(quota_key(key_id, "usd"), 0, quota.budget_usd, BUDGET_WINDOW_S))
    return kinds, charges


_DESCRIPTIONS = {
    "rpm": lambda quota: f"{quota.rpm} requests per minute",
    "tokens": lambda quota: f"{quota.tokens_per_day} tokens per 24 hours",
    "usd": lambda quota: f"${quota.budget_usd} per 30 days",
}
_POLICY_NAMES = {"rpm": "rpm", "tokens": "tokens-per-day", "usd": "budget"}


def quota_key(key_id: int | None, kind: str) -> str:
    return f"key:{key_id}:{kind}"


# -- the IETF RateLimit-Policy and RateLimit fields (draft-ietf-httpapi-ratelimit-headers-09) -----
#
# Both are Structured Field Lists (RFC 9651, serialized by http_sf) of policy names with parameters:
#     RateLimit-Policy: "rpm";q=30;w=60, "tokens-per-day";q=100000;qu="tokens";w=86400
#     RateLimit: "rpm";r=29;t=58, "tokens-per-day";r=99200;t=86341
# ``q`` is the quota, ``w`` the window in seconds, ``qu`` the quota unit (the draft registers
# ``requests``, the default, and ``concurrent-requests``; ``tokens`` and ``usd-micros`` are this
# server's), ``r`` what remains and ``t`` the seconds until some of it comes back. Every number is
# an SF Integer: a dollar budget is stated in millionths of a dollar.

Member = tuple[str, dict[str, int | str]]


def remaining(name: str, left: float, reset_s: float | None = None) -> Member:
    """One ``RateLimit`` member: what is left (never negative), seconds to reset rounded up."""
    params: dict[str, int | str] = {"r": max(math.floor(left), 0)}
    if reset_s is not None:  # None: not time-based (concurrency)
        params["t"] = max(math.ceil(reset_s), 0)
    return name, params


def policy(name: str, quota: int, window_s: int | None = None, unit: str | None = None) -> Member:
    """One ``RateLimit-Policy`` member (``unit`` None: requests)."""
    params: dict[str, int | str] = {"q": max(quota, 0)}
    if unit is not None:
        params["qu"] = unit
    if window_s is not None:
        params["w"] = window_s
    return name, params


def _remaining(kind: str, decision: Decision) -> Member:
    value = decision.remaining * USD_MICROS if kind == "usd" else decision.remaining
    return remaining(_POLICY_NAMES[kind], value, decision.reset_s)


def _headers(quota: Quota, states: list[Member], retry_after_s: float | None = None) -> dict[str, str]:
    headers = {"RateLimit-Policy": policy_header(quota), "RateLimit": http_sf.ser(states)}
    if retry_after_s is not None:
        headers["Retry-After"] = str(max(math.ceil(retry_after_s), 1))
    return headers


@cache
def policy_header(quota: Quota) -> str:
    """A key's ``RateLimit-Policy`` (the same on every answer: computed once per quota)."""
    policies = []
    if quota.rpm is not None:
        policies.append(policy("rpm", quota.rpm, MINUTE_S))
    if quota.tokens_per_day is not None:
        policies.append(policy("tokens-per-day", quota.tokens_per_day, DAY_S, "tokens"))
    if quota.budget_usd is not None:
        policies.append(
            policy("budget", math.floor(quota.budget_usd * USD_MICROS), BUDGET_WINDOW_S, "usd-micros")
        )
    if quota.max_in_flight is not None:
        policies.append(policy("in-flight", quota.max_in_flight, unit="concurrent-requests"))
    return http_sf.ser(policies)


# -- configuration ---------------------------------------------------------------------------------


@cache
def fail_mode() -> failures.FailMode:
    return get_runtime().config.config.server.limits_on_redis_error.keys


@cache
def lease_s() -> float:
    config = get_runtime().config.config
    timeouts = [config.timeout_for(name) for name in get_runtime().programs] or [
        config.server.request_timeout_s
    ]
    return max(timeouts) + LEASE_MARGIN_S


def install() -> None:
    """Plug the keys' quotas into every door (ApiKeysConfig.ready)."""
    reservations.install(reserve_for)


def get_runtime() -> "Runtime":
    """The loaded service (imported late: the app registry loads this module before DSPy is needed)."""
    from programs.runtime import get_runtime as runtime

    return runtime()
