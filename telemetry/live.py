"""Live telemetry events for dashboards, across workers and machines.

After each batch is committed, the writer thread publishes one event with that batch's per-program
totals to the channel layer group ``telemetry`` (Redis when ``REDIS_URL`` is set, so every worker's
batches reach every subscriber; in-memory otherwise, for one process). ``GET /api/events`` streams
the group as Server-Sent Events. Publishing happens on the event loop, once per batch: the request
path is not involved.
"""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future
from typing import Any

from channels.layers import get_channel_layer

from telemetry import records as telemetry_records
from telemetry.records import InferenceRecord

logger = logging.getLogger(__name__)

GROUP = "telemetry"
EVENT_TYPE = "telemetry.batch"
HEARTBEAT_S = 15.0


def batch_event(records: Sequence[InferenceRecord]) -> dict[str, Any]:
    """The per-program totals of one committed batch (what a dashboard adds to its numbers)."""
    programs: dict[str, dict[str, int]] = {}
    for record in records:
        totals = programs.setdefault(record.program, {"calls": 0, "errors": 0, "tokens": 0})
        totals["calls"] += 1
        totals["errors"] += 0 if record.success else 1
        totals["tokens"] += record.usage.total_tokens
    return {"type": EVENT_TYPE, "worker": telemetry_records.WORKER, "ts": time.time(), "programs": programs}


class LivePublisher:
    """Called by the writer thread; hands each event to the server's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def __call__(self, records: Sequence[InferenceRecord]) -> None:
        if self.loop.is_closed():
            return
        layer = get_channel_layer()
        future = asyncio.run_coroutine_threadsafe(layer.group_send(GROUP, batch_event(records)), self.loop)
        future.add_done_callback(_log_failure)


def _log_failure(future: Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("telemetry: live event not published: %s", future.exception())


async def event_stream() -> AsyncIterator[bytes]:
    """SSE frames for one subscriber, until the client goes away (the task is then cancelled)."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(GROUP, channel)
    try:
        yield b": connected\n\n"
        while True:
            try:
                async with asyncio.timeout(HEARTBEAT_S):
                    event = await layer.receive(channel)
            except TimeoutError:
                yield b": heartbeat\n\n"
                continue
            yield f"event: batch\ndata: {json.dumps(event)}\n\n".encode()
    finally:
        await layer.group_discard(GROUP, channel)
