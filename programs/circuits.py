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

:class:`programs.model_limits.StoreCircuit` keeps the state in the limit store (Redis: every server
sees the same circuit; else this process's), behind the :class:`CircuitState` protocol:
``check``/``record`` from worker threads, ``acheck``/``arecord`` on the event loop.
"""

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class CircuitPermit:
    """The circuit's answer to one call: go (perhaps as the trial), or wait ``retry_after_s``."""

    allowed: bool
    trial: bool = False
    retry_after_s: float = 0.0
    # Closed with no failure counted: a success has nothing to reset (no store write). A failure
    # counted by another call meanwhile is then not reset by this call's success.
    clean: bool = False


ALLOWED = CircuitPermit(True)


class CircuitState(Protocol):
    """What :mod:`programs.upstream` needs of a circuit, whoever keeps its state."""

    failures: int
    cooldown_s: float

    def check(self) -> CircuitPermit: ...

    def record(self, permit: CircuitPermit, ok: bool) -> str | None:
        """Count the call's outcome; returns ``"open"`` or ``"closed"`` when this changed the state."""
        ...

    async def acheck(self) -> CircuitPermit: ...

    async def arecord(self, permit: CircuitPermit, ok: bool) -> str | None: ...
