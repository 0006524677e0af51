"""Admission control: a bounded number of calls in flight, and a refusal instead of a queue.

Each program has a :class:`Limiter`; sync programs also need a slot of the process-wide limiter of
the thread pool, so no call ever waits in the executor's unbounded queue. A full limiter answers
at once (or after at most ``max_queue_ms``) and the client gets 429 with ``Retry-After``.
"""

import asyncio
import time

from programs import events
from programs.context import current_request_id


class Limiter:
    """At most ``limit`` holders; a newcomer waits at most ``max_wait_s`` for a free slot.

    ``asyncio.wait_for(sem.acquire(), timeout=0)`` would refuse even a free semaphore: the free
    case is taken without awaiting anything, so no other task can take the slot in between.
    """

    def __init__(self, name: str, limit: int, max_wait_s: float) -> None:
        self.name = name
        self.limit = limit
        self.max_wait_s = max_wait_s
        self._slots = asyncio.Semaphore(limit)

    async def try_acquire(self) -> bool:
        if self._slots.locked():
            if self.max_wait_s <= 0 or not await self._wait():
                return False
        else:
            await self._slots.acquire()  # free: returns without suspending
        return True

    async def _wait(self) -> bool:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.max_wait_s):
                await self._slots.acquire()
        except TimeoutError:
            admitted = False
        else:
            admitted = True
        if events.admission_waited:  # the queueing a trace shows (telemetry.tracing)
            waited_ms = (time.perf_counter() - started) * 1000
            events.admission_waited.emit(
                events.AdmissionWaited(current_request_id.get(), self.name, waited_ms, admitted)
            )
        return admitted

    def release(self) -> None:
        self._slots.release()
