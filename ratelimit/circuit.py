"""Circuit-breaker state shared like the budgets: failures seen by one server open it for all.

State per circuit key: the count of consecutive failures, ``open_until`` (0 while closed) and the
lease of the one trial call allowed once the cooldown is over. The breaker's policy (how many
failures, how long a cooldown, what an open circuit answers) belongs to the caller; the store keeps
the state and makes each transition atomic (``lua/circuit_check.lua``, ``lua/circuit_record.lua``
mirror the functions here):

* :func:`check`: closed → allowed; open and cooling down → refused with ``retry_after_s``; cooldown
  over → allowed as **the** trial call (a lease of ``trial_lease_s``, so a trial whose holder died
  lets another trial through), every other caller refused until the trial reports.
* :func:`record`: a success closes the circuit (state cleared); a failure counts, and opens the
  circuit for ``cooldown_s`` when the count reaches ``failures`` or when it was the trial call.
"""

from dataclasses import dataclass
from typing import Literal

CircuitState = Literal["closed", "open", "trial"]


@dataclass(frozen=True, slots=True)
class CircuitCheck:
    """``state`` "trial": this caller is the one trial call and must :func:`record` its outcome.

    ``failures``: the consecutive failures counted so far (closed only): a caller may skip
    recording a success when there was nothing to reset (one round trip fewer per call).
    """

    allowed: bool
    state: CircuitState
    retry_after_s: float = 0.0
    failures: int = 0


@dataclass(slots=True)
class Circuit:
    """One circuit's state (the in-process store's; Redis keeps the same fields in a hash)."""

    failures: int = 0
    open_until: float = 0.0
    trial_until: float = 0.0


def check(circuit: Circuit, now: float, trial_lease_s: float) -> CircuitCheck:
    if circuit.open_until == 0.0:
        return CircuitCheck(True, "closed", failures=circuit.failures)
    if now < circuit.open_until:
        return CircuitCheck(False, "open", circuit.open_until - now)
    if now < circuit.trial_until:
        return CircuitCheck(False, "open", circuit.trial_until - now)
    circuit.trial_until = now + trial_lease_s
    return CircuitCheck(True, "trial")


def record(circuit: Circuit, ok: bool, failures: int, cooldown_s: float, now: float) -> bool:
    """Apply one call's outcome; True when this failure opened (or re-opened) the circuit."""
    if ok:
        circuit.failures, circuit.open_until, circuit.trial_until = 0, 0.0, 0.0
        return False
    circuit.failures += 1
    if circuit.open_until == 0.0 and circuit.failures < failures:
        return False
    if circuit.open_until != 0.0 and now < circuit.open_until:
        return False  # a call admitted before it opened failed too: the cooldown does not restart
    circuit.open_until, circuit.trial_until = now + cooldown_s, 0.0
    return True
