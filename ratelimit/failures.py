"""What a limit does when the shared store is down: fail open or closed, counted and logged once.

Each kind of limit (``keys``: the API keys' quotas; ``models``: the model budgets and circuits)
has its mode in ``server.limits_on_redis_error`` (programs/config.py). ``fail_open``: the limit is
skipped while Redis is down (traffic goes on, unlimited); ``fail_closed``: the request is refused
with 503 and ``Retry-After`` (never 500). Either way
``dspy_ratelimit_store_errors_total{kind, mode}`` counts it (multiprocess-safe like every metric of
``/metrics``: prometheus-client's multiprocess mode is chosen from the environment at import).

An incident is logged twice, not once per request: a warning at its first failure, and an info
line at the first success after it (the clients reconnect by themselves).
"""

import logging
import threading
from typing import Literal

from prometheus_client import Counter

logger = logging.getLogger(__name__)

FailMode = Literal["fail_open", "fail_closed"]
LimitKind = Literal["keys", "models"]

STORE_ERRORS = Counter(
    "dspy_ratelimit_store_errors_total",
    "Limit checks that could not reach the shared store (Redis), by limit kind and what was done",
    ["kind", "mode"],
)
_children = {
    (kind, mode): STORE_ERRORS.labels(kind, mode)
    for kind in ("keys", "models")
    for mode in ("fail_open", "fail_closed")
}

_lock = threading.Lock()
_incident = False  # True from a failure to the next success (per process)


def limit_failed(kind: LimitKind, mode: FailMode) -> bool:
    """Count a check of ``kind`` that the store could not answer; True when it may go on (fail open)."""
    _children[(kind, mode)].inc()
    return mode == "fail_open"


def store_failed(error: Exception) -> None:
    """Called by the store on each failure; logs the first one of an incident."""
    global _incident
    if _incident:
        return
    with _lock:
        first, _incident = not _incident, True
    if first:
        logger.warning(
            "Shared limit store unavailable (%s): limits follow server.limits_on_redis_error", error
        )


def store_answered() -> None:
    """Called by the store on each success: one attribute read, unless an incident just ended."""
    global _incident
    if not _incident:
        return
    with _lock:
        ended, _incident = _incident, False
    if ended:
        logger.info("Shared limit store reachable again: limits are shared again")


def in_incident() -> bool:
    return _incident
