"""The call-trace writer's life in a process, like telemetry's (:mod:`telemetry.lifecycle`): the same
writer class (bounded queue in records and bytes, batches, retries, counted drops) with the loop's
own queue, so a burst of large prompts can neither delay nor push out the inference log's rows.
Started by the ASGI lifespan start-up, flushed and stopped at shutdown.
"""

import asyncio

from django.conf import settings

from loop.storage import call_traces_write
from loop.traces import trace_size
from telemetry.writer import TelemetryWriter

_writer: TelemetryWriter | None = None


def trace_writer() -> TelemetryWriter:
    """This process's trace writer (created on first use; started by :func:`loop_startup`)."""
    global _writer
    if _writer is None:
        _writer = TelemetryWriter(
            call_traces_write,  # type: ignore[arg-type]
            max_queue=settings.LOOP_TRACE_QUEUE_MAX,
            batch_size=settings.TELEMETRY_BATCH_SIZE,
            flush_interval_s=settings.TELEMETRY_FLUSH_INTERVAL_S,
            max_bytes=settings.LOOP_TRACE_QUEUE_MAX_BYTES,
            sizer=trace_size,  # type: ignore[arg-type]
            metrics=False,
        )
    return _writer


async def loop_startup() -> None:
    trace_writer().start()


async def loop_shutdown() -> None:
    await asyncio.to_thread(trace_writer().stop, settings.TELEMETRY_SHUTDOWN_TIMEOUT_S)
