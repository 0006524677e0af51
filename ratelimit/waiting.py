"""Waiting for capacity: take again when the window says it will fit, within a bound, never spinning.

A model budget may make a call wait up to ``server.max_queue_ms`` before refusing it. The refused
:class:`~ratelimit.windows.Decision` says when the amount fits (``retry_after_s``): if that is
within what is left of the bound, sleep exactly that long and take again (another caller may have
been faster: then the new decision says how long again); otherwise return the refusal at once, so
a caller that cannot be served in time is told immediately rather than at the end of the bound.
"""

import asyncio
import time

from ratelimit import Store
from ratelimit.windows import Decision

MIN_SLEEP_S = 0.001  # a retry_after of 0 (capacity back this instant) still yields once


async def atake_within(
    store: Store, key: str, amount: float, limit: float, window_s: float, max_wait_s: float
) -> Decision:
    """:meth:`Store.atake`, retried while the wait it asks for fits within ``max_wait_s``."""
    deadline = time.monotonic() + max_wait_s
    while True:
        decision = await store.atake(key, amount, limit, window_s)
        left = deadline - time.monotonic()
        if decision.allowed or decision.retry_after_s > left:
            return decision
        await asyncio.sleep(max(decision.retry_after_s, MIN_SLEEP_S))


def take_within(
    store: Store, key: str, amount: float, limit: float, window_s: float, max_wait_s: float
) -> Decision:
    """The sync form, for worker threads."""
    deadline = time.monotonic() + max_wait_s
    while True:
        decision = store.take(key, amount, limit, window_s)
        left = deadline - time.monotonic()
        if decision.allowed or decision.retry_after_s > left:
            return decision
        time.sleep(max(decision.retry_after_s, MIN_SLEEP_S))
