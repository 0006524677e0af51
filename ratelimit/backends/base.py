"""The store of shared limit state: the interface every backend implements (:class:`Store`).

The backends: :mod:`ratelimit.backends.redis` (shared by every process and machine) and
:mod:`ratelimit.backends.memory` (one process); :func:`ratelimit.get_store` picks one.

Every operation exists twice: ``take`` for worker threads (sync programs call their LM there) and
``atake`` for the event loop. Keys are the caller's names (``key:7:rpm``, ``model:judge:tpm``...);
the store prefixes them. A Redis failure raises :class:`StoreUnavailable` (never anything else):
what a limit does then (fail open or closed) is the caller's choice, see :mod:`ratelimit.failures`.

Operations (each one atomic, one round trip to Redis):

* ``take(key, amount, limit, window_s)`` → :class:`~ratelimit.windows.Decision`: a windowed budget
  (requests or tokens or dollars per window), algorithm in :mod:`ratelimit.windows`.
  ``take_all([Charge, ...])``: several budgets at once, all charged or none (a key's requests,
  tokens and dollars in one round trip).
* ``settle(reservation, actual)``, ``settle_all([(reservation, actual), ...])``: replace
  reservations' amounts by what was really used.
* ``acquire(key, limit, lease_s)`` → :class:`Slot`; ``release(key, lease_id)``: at most ``limit``
  holders; a holder that never releases (crashed worker) loses its slot when its lease expires.
* ``take_with_slot(charges, claim)``: budgets and a slot together, in one round trip (a request's
  quotas at admission; the slot goes back with ``release``).
* ``circuit_check`` / ``circuit_record``: the circuit breaker's shared state (:mod:`ratelimit.circuit`).
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from ratelimit.circuit import CircuitCheck
from ratelimit.windows import Charge, Decision, Reservation


class StoreUnavailable(Exception):
    """The shared store (Redis) did not answer; the message says why."""


@dataclass(frozen=True, slots=True)
class SlotClaim:
    """A concurrency slot to take with budgets: at most ``limit`` holders, each for ``lease_s``."""

    key: str
    limit: int
    lease_s: float


@dataclass(frozen=True, slots=True)
class Slot:
    """A concurrency slot: ``lease_id`` to release it when ``acquired``; ``remaining`` after this one."""

    acquired: bool
    remaining: int
    lease_id: str | None = None


class Store(ABC):
    """Sync and async forms of each operation; see the module docstring."""

    def take(self, key: str, amount: float, limit: float, window_s: float) -> Decision:
        return self.take_all([Charge(key, amount, limit, window_s)])[0]

    def settle(self, reservation: Reservation, actual: float) -> None:
        self.settle_all([(reservation, actual)])

    @abstractmethod
    def take_all(self, charges: Sequence[Charge]) -> list[Decision]: ...

    @abstractmethod
    def settle_all(self, settlements: Sequence[tuple[Reservation, float]]) -> None: ...

    @abstractmethod
    def take_with_slot(self, charges: Sequence[Charge], claim: SlotClaim) -> tuple[list[Decision], Slot]:
        """Budgets and a slot, all or nothing (a full slot refuses the budgets too)."""

    @abstractmethod
    def acquire(self, key: str, limit: int, lease_s: float) -> Slot: ...

    @abstractmethod
    def release(self, key: str, lease_id: str) -> None: ...

    @abstractmethod
    def circuit_check(self, key: str, trial_lease_s: float) -> CircuitCheck: ...

    @abstractmethod
    def circuit_record(self, key: str, ok: bool, failures: int, cooldown_s: float) -> bool: ...

    async def atake(self, key: str, amount: float, limit: float, window_s: float) -> Decision:
        return (await self.atake_all([Charge(key, amount, limit, window_s)]))[0]

    async def asettle(self, reservation: Reservation, actual: float) -> None:
        await self.asettle_all([(reservation, actual)])

    @abstractmethod
    async def atake_all(self, charges: Sequence[Charge]) -> list[Decision]: ...

    @abstractmethod
    async def asettle_all(self, settlements: Sequence[tuple[Reservation, float]]) -> None: ...

    @abstractmethod
    async def atake_with_slot(
        self, charges: Sequence[Charge], claim: SlotClaim
    ) -> tuple[list[Decision], Slot]: ...

    @abstractmethod
    async def aacquire(self, key: str, limit: int, lease_s: float) -> Slot: ...

    @abstractmethod
    async def arelease(self, key: str, lease_id: str) -> None: ...

    @abstractmethod
    async def acircuit_check(self, key: str, trial_lease_s: float) -> CircuitCheck: ...

    @abstractmethod
    async def acircuit_record(self, key: str, ok: bool, failures: int, cooldown_s: float) -> bool: ...
