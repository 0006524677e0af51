"""A model's circuit and rpm/tpm budget, kept in the shared limit store (:mod:`ratelimit`).

With ``REDIS_URL`` set every server and worker reads and changes the same state (one Lua script,
one round trip, per check), so failures seen by one server open the circuit for all of them and
the budget is the cluster's, not each process's. Without it the store is in-process: the same
behaviour on one process. Keys: ``model:<alias>:rpm``, ``model:<alias>:tpm``,
``model:<alias>:circuit``.

Redis down: ``server.limits_on_redis_error.models`` (default ``fail_open``: the check is skipped
and the provider's own limits remain, its 429s retried and answered 503; ``fail_closed``: 503
with ``Retry-After`` at once). Counted in ``dspy_ratelimit_store_errors_total{kind="models"}``.
"""

import asyncio
import time
from collections.abc import Sequence

from programs.circuits import ALLOWED, CircuitPermit
from programs.upstream import Grant, LimitsUnavailable
from ratelimit import Store, StoreUnavailable
from ratelimit.circuit import CircuitCheck
from ratelimit.failures import FailMode, limit_failed
from ratelimit.windows import Charge, Decision

WINDOW_S = 60.0  # rpm and tpm are per minute
CLEAN = CircuitPermit(True, clean=True)
MIN_SLEEP_S = 0.001
STORE_RETRY_AFTER_S = 1.0  # what a fail_closed refusal asks the client to wait


def _unavailable(kind: str, alias: str, mode: FailMode, error: StoreUnavailable) -> LimitsUnavailable | None:
    """None when the check may be skipped (fail_open); else the 503 to raise."""
    if limit_failed("models", mode):
        return None
    message = f"the {kind} of {alias} cannot be checked ({error}); retry later"
    return LimitsUnavailable(message, retry_after=STORE_RETRY_AFTER_S)


class StoreCircuit:
    """:class:`programs.circuits.CircuitState` on the store (ratelimit/circuit.py's transitions)."""

    def __init__(self, store: Store, alias: str, failures: int, cooldown_s: float, mode: FailMode) -> None:
        self.store = store
        self.alias = alias
        self.key = f"model:{alias}:circuit"
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.mode = mode

    def check(self) -> CircuitPermit:
        try:
            return _permit(self.store.circuit_check(self.key, self.cooldown_s))
        except StoreUnavailable as exc:
            return self._failed(exc)

    async def acheck(self) -> CircuitPermit:
        try:
            return _permit(await self.store.acircuit_check(self.key, self.cooldown_s))
        except StoreUnavailable as exc:
            return self._failed(exc)

    def record(self, permit: CircuitPermit, ok: bool) -> str | None:
        if ok and permit.clean:
            return None
        try:
            opened = self.store.circuit_record(self.key, ok, self.failures, self.cooldown_s)
        except StoreUnavailable:
            limit_failed("models", self.mode)
            return None
        return _change(permit, ok, opened)

    async def arecord(self, permit: CircuitPermit, ok: bool) -> str | None:
        if ok and permit.clean:
            return None
        try:
            opened = await self.store.acircuit_record(self.key, ok, self.failures, self.cooldown_s)
        except StoreUnavailable:
            limit_failed("models", self.mode)
            return None
        return _change(permit, ok, opened)

    def _failed(self, exc: StoreUnavailable) -> CircuitPermit:
        refusal = _unavailable("circuit breaker", self.alias, self.mode, exc)
        if refusal is not None:
            raise refusal
        return ALLOWED


def _permit(check: CircuitCheck) -> CircuitPermit:
    if check.state == "closed":
        return CLEAN if check.failures == 0 else ALLOWED
    return CircuitPermit(check.allowed, check.state == "trial", check.retry_after_s)


def _change(permit: CircuitPermit, ok: bool, opened: bool) -> str | None:
    if opened:
        return "open"
    return "closed" if ok and permit.trial else None


class StoreBudget:
    """:class:`programs.upstream.ModelBudget` on the store: one ``take_all`` of the request (rpm)
    and its estimated tokens (tpm), all charged or none, waiting up to ``max_wait_s`` for room."""

    def __init__(
        self,
        store: Store,
        alias: str,
        rpm: int | None,
        tpm: int | None,
        max_wait_s: float,
        mode: FailMode,
        window_s: float = WINDOW_S,  # a minute; shorter only in tests
    ) -> None:
        self.store = store
        self.alias = alias
        self.rpm = rpm
        self.tpm = tpm
        self.max_wait_s = max_wait_s
        self.mode = mode
        self.window_s = window_s

    def _charges(self, tokens: int) -> list[Charge]:
        charges = []
        if self.rpm is not None:
            charges.append(Charge(f"model:{self.alias}:rpm", 1, self.rpm, self.window_s))
        if self.tpm is not None:
            charges.append(Charge(f"model:{self.alias}:tpm", tokens, self.tpm, self.window_s))
        return charges

    def reserve(self, tokens: int) -> Grant:
        charges = self._charges(tokens)
        deadline = time.monotonic() + self.max_wait_s
        try:
            while True:
                grant, wait = self._decide(charges, self.store.take_all(charges), deadline)
                if wait is None:
                    return grant
                time.sleep(wait)
        except StoreUnavailable as exc:
            return self._failed(exc)

    async def areserve(self, tokens: int) -> Grant:
        charges = self._charges(tokens)
        deadline = time.monotonic() + self.max_wait_s
        try:
            while True:
                grant, wait = self._decide(charges, await self.store.atake_all(charges), deadline)
                if wait is None:
                    return grant
                await asyncio.sleep(wait)
        except StoreUnavailable as exc:
            return self._failed(exc)

    def settle(self, grant: Grant, tokens: int) -> None:
        if grant.handle is not None:
            try:
                self.store.settle(grant.handle, tokens)
            except StoreUnavailable:
                limit_failed("models", self.mode)

    async def asettle(self, grant: Grant, tokens: int) -> None:
        if grant.handle is not None:
            try:
                await self.store.asettle(grant.handle, tokens)
            except StoreUnavailable:
                limit_failed("models", self.mode)

    def _decide(
        self, charges: Sequence[Charge], decisions: list[Decision], deadline: float
    ) -> tuple[Grant, float | None]:
        """The grant, and None, or the seconds to sleep before taking again (the room fits the wait)."""
        if all(decision.allowed for decision in decisions):
            tpm = [d.reservation for c, d in zip(charges, decisions, strict=True) if c.key.endswith(":tpm")]
            return Grant(True, handle=tpm[0] if tpm else None), None
        refusing = max(decisions, key=lambda decision: decision.retry_after_s)
        limit = charges[decisions.index(refusing)].key.rsplit(":", 1)[-1]
        grant = Grant(False, retry_after_s=refusing.retry_after_s, limit=limit)
        if refusing.retry_after_s > deadline - time.monotonic():
            return grant, None
        return grant, max(refusing.retry_after_s, MIN_SLEEP_S)

    def _failed(self, exc: StoreUnavailable) -> Grant:
        refusal = _unavailable("budget", self.alias, self.mode, exc)
        if refusal is not None:
            raise refusal
        return Grant(True)
