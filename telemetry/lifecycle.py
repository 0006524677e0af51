"""The telemetry writer's life in a process: created on first use, started by the ASGI lifespan
start-up (after the counters are rebuilt from the database), flushed and stopped by its shutdown
(gunicorn's ``worker_exit`` and ``atexit`` too). The thread itself is :mod:`telemetry.writer`.
"""

import asyncio
import logging

from django.conf import settings
from django.db import connection

from telemetry import prometheus
from telemetry.counters import PROCESS_COUNTERS
from telemetry.live import LivePublisher
from telemetry.storage import inference_logs_write
from telemetry.writer import TelemetryWriter

logger = logging.getLogger(__name__)

_writer: TelemetryWriter | None = None


def telemetry_writer() -> TelemetryWriter:
    """This process's writer (created on first use; started by :func:`telemetry_startup`)."""
    global _writer
    if _writer is None:
        _writer = TelemetryWriter(
            inference_logs_write,
            max_queue=settings.TELEMETRY_QUEUE_MAX,
            batch_size=settings.TELEMETRY_BATCH_SIZE,
            flush_interval_s=settings.TELEMETRY_FLUSH_INTERVAL_S,
            max_bytes=settings.TELEMETRY_QUEUE_MAX_BYTES,
        )
    return _writer


def telemetry_writer_reset() -> None:
    """Stop and forget the writer (tests, and a process that re-reads its settings)."""
    global _writer
    if _writer is not None:
        _writer.stop(timeout_s=settings.TELEMETRY_SHUTDOWN_TIMEOUT_S)
    _writer = None


def telemetry_flush(timeout_s: float = 10.0) -> bool:
    """Block until everything recorded so far is in the database."""
    return telemetry_writer().flush(timeout_s)


async def telemetry_startup() -> None:
    """Lifespan start-up: rebuild the counters from the database, then start the writer."""
    await asyncio.to_thread(_rebuild_then_close)
    writer = telemetry_writer()
    writer.on_written = LivePublisher(asyncio.get_running_loop())
    writer.start()


def _rebuild_then_close() -> None:
    try:
        program_counters_rebuild()
        _export_migrations()
    finally:
        connection.close()  # this start-up thread's connection; requests never use it


async def telemetry_shutdown() -> None:
    """Lifespan shutdown (uvicorn runs it on SIGTERM after in-flight requests finish): flush."""
    timeout = settings.TELEMETRY_SHUTDOWN_TIMEOUT_S
    await asyncio.to_thread(telemetry_writer().stop, timeout)


def _export_migrations() -> None:
    from django.db import DatabaseError

    try:
        prometheus.export_migrations()
    except DatabaseError as exc:  # the server still starts; the gauges stay unset
        logger.warning("telemetry: migration metrics not exported, the database is not readable: %s", exc)


def program_counters_rebuild() -> bool:
    """Load the database totals into this process's counters (once, at start-up)."""
    from django.db import DatabaseError

    from telemetry.selectors import program_stats_totals

    try:
        PROCESS_COUNTERS.load(program_stats_totals().values())
    except DatabaseError as exc:
        logger.warning("telemetry: counters start from zero, the database is not readable: %s", exc)
        return False
    return True
