"""The in-process store: one process, nothing to install. Thread-safe, one short lock per operation.

The lock covers only the arithmetic on one key's few numbers (no I/O, no allocation beyond a
bucket): worker threads and the event loop share it without measurable waiting. The async forms
run the sync ones inline (nothing in them blocks).
"""

import secrets
import threading
import time
from collections.abc import Callable, Sequence

from ratelimit import circuit as circuits
from ratelimit import windows
from ratelimit.backends.base import Slot, SlotClaim, Store
from ratelimit.circuit import Circuit, CircuitCheck
from ratelimit.windows import Charge, Decision, Reservation


class MemoryStore(Store):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._budgets: dict[str, dict[int, float]] = {}
        self._leases: dict[str, dict[str, float]] = {}  # key -> lease id -> expiry
        self._circuits: dict[str, Circuit] = {}

    def take_all(self, charges: Sequence[Charge]) -> list[Decision]:
        with self._lock:
            budgets = [self._budgets.setdefault(charge.key, {}) for charge in charges]
            return windows.take_all(budgets, list(charges), self.clock())

    def settle_all(self, settlements: Sequence[tuple[Reservation, float]]) -> None:
        with self._lock:
            now = self.clock()
            for reservation, actual in settlements:
                windows.settle(self._budgets.setdefault(reservation.key, {}), reservation, actual, now)

    def take_with_slot(self, charges: Sequence[Charge], claim: SlotClaim) -> tuple[list[Decision], Slot]:
        lease_id = secrets.token_hex(8)
        with self._lock:
            now = self.clock()
            leases = self._live_leases(claim.key, now)
            budgets = [self._budgets.setdefault(charge.key, {}) for charge in charges]
            full = len(leases) >= claim.limit
            decisions = windows.take_all(budgets, list(charges), now, refuse=full)
            if full or not all(decision.allowed for decision in decisions):
                return decisions, Slot(False, max(claim.limit - len(leases), 0))
            leases[lease_id] = now + claim.lease_s
            return decisions, Slot(True, claim.limit - len(leases), lease_id)

    def acquire(self, key: str, limit: int, lease_s: float) -> Slot:
        lease_id = secrets.token_hex(8)
        with self._lock:
            now = self.clock()
            leases = self._live_leases(key, now)
            if len(leases) >= limit:
                return Slot(False, 0)
            leases[lease_id] = now + lease_s
            return Slot(True, limit - len(leases), lease_id)

    def _live_leases(self, key: str, now: float) -> dict[str, float]:
        """The key's leases (lease id -> expiry), the expired ones dropped. Under the lock."""
        leases = self._leases.setdefault(key, {})
        for expired in [held for held, until in leases.items() if until <= now]:
            del leases[expired]
        return leases

    def release(self, key: str, lease_id: str) -> None:
        with self._lock:
            self._leases.get(key, {}).pop(lease_id, None)

    def circuit_check(self, key: str, trial_lease_s: float) -> CircuitCheck:
        with self._lock:
            return circuits.check(self._circuits.setdefault(key, Circuit()), self.clock(), trial_lease_s)

    def circuit_record(self, key: str, ok: bool, failures: int, cooldown_s: float) -> bool:
        with self._lock:
            state = self._circuits.setdefault(key, Circuit())
            return circuits.record(state, ok, failures, cooldown_s, self.clock())

    async def atake_all(self, charges: Sequence[Charge]) -> list[Decision]:
        return self.take_all(charges)

    async def asettle_all(self, settlements: Sequence[tuple[Reservation, float]]) -> None:
        self.settle_all(settlements)

    async def atake_with_slot(
        self, charges: Sequence[Charge], claim: SlotClaim
    ) -> tuple[list[Decision], Slot]:
        return self.take_with_slot(charges, claim)

    async def aacquire(self, key: str, limit: int, lease_s: float) -> Slot:
        return self.acquire(key, limit, lease_s)

    async def arelease(self, key: str, lease_id: str) -> None:
        self.release(key, lease_id)

    async def acircuit_check(self, key: str, trial_lease_s: float) -> CircuitCheck:
        return self.circuit_check(key, trial_lease_s)

    async def acircuit_record(self, key: str, ok: bool, failures: int, cooldown_s: float) -> bool:
        return self.circuit_record(key, ok, failures, cooldown_s)
