"""Circuit breakers per model: after ``failures`` consecutive upstream faults, stop calling it.

A dead upstream would otherwise be called (and waited for) by every request. States:

* closed: calls go through; a success resets the count of consecutive failures;
* open, for ``cooldown_s`` after the failure that tripped it: every call is refused at once
  (:mod:`programs.upstream` answers 503 or goes to a fallback) without reaching the model;
* after the cooldown, one call at a time is let through as the trial: its success closes the
  circuit, its failure opens it for another cooldown. A trial that never reports (its process
  died) gives its turn to another caller after ``cooldown_s``.

Only faults of the upstream itself count (5xx, timeouts, connection failures), not a 429 (the
provider is up, it is rate-limiting: that is for the budgets and Retry-After) nor a 4xx (the
request's fault).

:class:`LocalCircuit` is the state of one process. A shared state (every server sees the same
circuit) implements the same :class:`CircuitState` protocol: ``check``/``record`` from worker
threads, ``acheck``/``arecord`` on the event loop.
"""

import threading
import time
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Admission:
    """The circuit's answer to one call: go (perhaps as the trial), or wait ``retry_after_s``."""

    allowed: bool
    trial: bool = False
    retry_after_s: float = 0.0


ALLOWED = Admission(True)


class CircuitState(Protocol):
    """What :mod:`programs.upstream` needs of a circuit, whoever keeps its state."""

    failures: int
    cooldown_s: float

    def check(self) -> Admission: ...

    def record(self, admission: Admission, ok: bool) -> str | None:
        """Count the call's outcome; returns ``"open"`` or ``"closed"`` when this changed the state."""
        ...

    async def acheck(self) -> Admission: ...

    async def arecord(self, admission: Admission, ok: bool) -> str | None: ...


class LocalCircuit:
    """One process's circuit. The lock is held for a few comparisons, never across a call."""

    def __init__(self, failures: int, cooldown_s: float) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._lock = threading.Lock()
        self._consecutive = 0
        self._open_until = 0.0  # monotonic; 0: closed
        self._trial_until = 0.0  # a trial call is out until then

    def check(self) -> Admission:
        now = time.monotonic()
        with self._lock:
            if not self._open_until:
                return ALLOWED
            if now < self._open_until:
                return Admission(False, retry_after_s=self._open_until - now)
            if now < self._trial_until:
                return Admission(False, retry_after_s=min(1.0, self._trial_until - now))
            self._trial_until = now + self.cooldown_s
            return Admission(True, trial=True)

    def record(self, admission: Admission, ok: bool) -> str | None:
        now = time.monotonic()
        with self._lock:
            was_open = bool(self._open_until)
            if ok:
                self._consecutive = 0
                self._open_until = self._trial_until = 0.0
                return "closed" if was_open else None
            if admission.trial:
                self._open_until, self._trial_until = now + self.cooldown_s, 0.0
                return "open"
            self._consecutive += 1
            if not was_open and self._consecutive >= self.failures:
                self._open_until = now + self.cooldown_s
                return "open"
            return None

    async def acheck(self) -> Admission:
        return self.check()

    async def arecord(self, admission: Admission, ok: bool) -> str | None:
        return self.record(admission, ok)
