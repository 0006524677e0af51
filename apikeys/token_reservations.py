"""An API key's ``tokens_per_day`` and ``budget_usd``, reserved per LM call (programs/lm_gates.py).

A request's tokens are not known when it is admitted: an optimized program sends a fixed prompt
(instructions, demos) many times the size of its inputs, and a program may make several LM calls.
So the key's admission (:mod:`apikeys.quotas`) only checks that some of the quota is left, and binds
a :class:`KeyQuotaGate` for the request (:func:`bind`); :mod:`programs.upstream` then asks it before
every upstream request: the request's bound (its rendered prompt's UTF-8 bytes, the chat template,
its ``max_tokens``: :func:`programs.pricing.call_token_bound`) and that bound's price are reserved
on the key's budgets in one atomic ``take_all`` on the shared store (the same keys as the
admission's, ``key:<id>:tokens`` and ``key:<id>:usd``), and settled with what the upstream billed
in one ``settle_all`` once it answered. Concurrent calls on every server see each other's
reservations, so a burst can only overshoot by calls that bill more than their bound (none while
the bound holds). Over the quota: the call is not sent and the request answers 429
``quota_exceeded`` with ``Retry-After``. Store down: ``server.limits_on_redis_error.keys``, as at
the admission (fail_closed: 503 with ``Retry-After``; fail_open: the call goes on unreserved).
"""

import contextvars
import math

from apikeys import quotas
from apikeys.context import Caller
from programs.lm_gates import CallBound, LMCallGate, LMCallRefused, current_lm_gate
from ratelimit import Store, StoreUnavailable, failures, get_store
from ratelimit.windows import Charge, Decision, Reservation

Ticket = list[Reservation]  # what a reserve took; empty when the store failed open


class KeyQuotaGate:
    """:class:`programs.lm_gates.LMCallGate` for one key: its token and dollar budgets per LM call."""

    __slots__ = ("budget_usd", "key_id", "store", "tokens_per_day")

    def __init__(
        self, store: Store, key_id: int | None, tokens_per_day: int | None, budget_usd: float | None
    ):
        self.store = store
        self.key_id = key_id
        self.tokens_per_day = tokens_per_day
        self.budget_usd = budget_usd

    def _charges(self, bound: CallBound) -> list[Charge]:
        charges = []
        if self.tokens_per_day is not None:
            key = quotas.quota_key(self.key_id, "tokens")
            charges.append(Charge(key, bound.tokens, self.tokens_per_day, quotas.DAY_S))
        if self.budget_usd is not None:
            key = quotas.quota_key(self.key_id, "usd")
            charges.append(Charge(key, bound.cost_usd, self.budget_usd, quotas.BUDGET_WINDOW_S))
        return charges

    def reserve(self, bound: CallBound) -> Ticket:
        charges = self._charges(bound)
        try:
            decisions = self.store.take_all(charges)
        except StoreUnavailable as exc:
            return _unavailable(exc)
        return self._decided(bound, charges, decisions)

    async def areserve(self, bound: CallBound) -> Ticket:
        charges = self._charges(bound)
        try:
            decisions = await self.store.atake_all(charges)
        except StoreUnavailable as exc:
            return _unavailable(exc)
        return self._decided(bound, charges, decisions)

    def settle(self, handle: object, tokens: int, cost_usd: float) -> None:
        settlements = self._settlements(handle, tokens, cost_usd)
        if settlements:
            try:
                self.store.settle_all(settlements)
            except StoreUnavailable:
                failures.limit_failed("keys", quotas.fail_mode())

    async def asettle(self, handle: object, tokens: int, cost_usd: float) -> None:
        settlements = self._settlements(handle, tokens, cost_usd)
        if settlements:
            try:
                await self.store.asettle_all(settlements)
            except StoreUnavailable:
                failures.limit_failed("keys", quotas.fail_mode())

    def _settlements(self, handle: object, tokens: int, cost_usd: float) -> list[tuple[Reservation, float]]:
        assert isinstance(handle, list)
        return [(r, float(tokens) if r.key.endswith(":tokens") else cost_usd) for r in handle]

    def _decided(self, bound: CallBound, charges: list[Charge], decisions: list[Decision]) -> Ticket:
        if all(decision.allowed for decision in decisions):
            return [decision.reservation for decision in decisions if decision.reservation is not None]
        refused = [
            (charge, decision)
            for charge, decision in zip(charges, decisions, strict=True)
            if decision.retry_after_s > 0
        ]
        limits = []
        for charge, _ in refused:
            kind = "tokens" if charge.key.endswith(":tokens") else "usd"
            quotas.REFUSALS.labels(kind).inc()
            limits.append(
                f"{self.tokens_per_day} tokens per 24 hours"
                if kind == "tokens"
                else f"${self.budget_usd} per 30 days"
            )
        retry_after_s = max(decision.retry_after_s for decision in decisions)
        needs = f"an LM call of this request may bill {bound.tokens} tokens"
        detail = f"API key quota exceeded: {', '.join(limits)} ({needs})"
        raise LMCallRefused(detail, status=429, retry_after=max(math.ceil(retry_after_s), 1))


def _unavailable(exc: StoreUnavailable) -> Ticket:
    if failures.limit_failed("keys", quotas.fail_mode()):
        return []
    quotas.REFUSALS.labels("unavailable").inc()
    detail = "API key quotas cannot be checked right now (the shared limit store is unavailable)"
    raise LMCallRefused(detail, status=503, retry_after=quotas.UNAVAILABLE_RETRY_S) from exc


def gate_for(caller: Caller | None) -> LMCallGate | None:
    """The key's gate, or None when its quotas count no tokens or dollars."""
    quota = caller.quota if caller is not None else None
    if quota is None or (quota.tokens_per_day is None and quota.budget_usd is None):
        return None
    return KeyQuotaGate(get_store(), caller.key_id, quota.tokens_per_day, quota.budget_usd)


def bind(caller: Caller | None) -> contextvars.Token[LMCallGate | None]:
    """THE one call an admission makes, in the context the program will run in: every LM call of
    the request is then reserved against the key's token and dollar quotas. Returns the token
    to ``current_lm_gate.reset`` with when that context outlives the request (an MCP tool call)."""
    return current_lm_gate.set(gate_for(caller))
