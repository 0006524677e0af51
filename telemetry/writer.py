"""The one background thread per process that moves telemetry records from memory to the database.

The request path only calls :meth:`TelemetryWriter.enqueue` (``put_nowait`` on a bounded queue).
This thread drains the queue in batches (``batch_size`` records, or whatever arrived within
``flush_interval_s`` of the first one) and hands each batch to ``write`` (one transaction: rows and
aggregates). Database errors are retried with exponential backoff and the batch is kept, so an
outage loses nothing as long as the queue has room; past that, records are dropped and counted.
A batch the database rejects for its content (a data or integrity error) is split in halves until
the bad record is isolated, so one bad record can neither block the queue nor take good ones down.
The thread keeps its database connection while batches keep coming and gives it back after a
whole ``flush_interval_s`` without records: reconnecting for every batch (what Django's
``close_old_connections`` does with ``CONN_MAX_AGE = 0``) cost ~2% of the server's CPU on SQLite.
A connection that breaks in between fails the next write, which is closed and retried.
"""

import atexit
import contextlib
import ctypes
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from django.db import DatabaseError, DataError, IntegrityError, connection

from telemetry import prometheus
from telemetry.records import InferenceRecord

logger = logging.getLogger(__name__)

WriteBatch = Callable[[Sequence[InferenceRecord]], None]
RETRY_BASE_S = 0.1
LOG_EVERY_S = 30.0
# What a record holds besides its captured bodies (the dataclass, its strings, the usage snapshot),
# counted against ``max_bytes``: ~1 KB measured with sys.getsizeof over a typical record.
RECORD_OVERHEAD_BYTES = 1024


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc only
    except (AttributeError, OSError):
        return None


_MALLOC_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere nothing).

    glibc keeps what a burst of large calls freed: after 400 calls with 60 KB bodies and four
    300 KB streams the server's RSS stayed at 176 MiB (128 at start) for as long as it was idle;
    ``malloc_trim(0)`` brought it to 142. ``MALLOC_ARENA_MAX=2`` changed nothing (170). Called by
    the writer when it goes idle after writing, off the request path (ctypes releases the GIL).
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def record_bytes(record: InferenceRecord) -> int:
    """The memory a queued record holds, as counted against the writer's byte bound: its captured
    request and response bodies (bytes kept only up to the capture limit) plus a fixed overhead."""
    size = RECORD_OVERHEAD_BYTES
    for body in (record.inputs, record.outputs):
        if body is not None and body.raw is not None:
            size += len(body.raw)
    return size


@dataclass
class _Flush:
    done: threading.Event = field(default_factory=threading.Event)


_WAKE = object()  # nudges the thread out of its wait (stop)


class TelemetryWriter:
    def __init__(
        self,
        write: WriteBatch,
        *,
        max_queue: int,
        batch_size: int,
        flush_interval_s: float,
        retry_max_s: float = 5.0,
        max_bytes: int | None = None,
        sizer: Callable[[InferenceRecord], int] = record_bytes,
        metrics: bool = True,
    ) -> None:
        self._write_batch = write
        # What a record holds in memory (another app's records: the loop's call traces).
        self._sizer = sizer
        self._metrics = metrics  # the telemetry_* Prometheus series are the inference log's only
        # Bytes held by records enqueued and not yet written or dropped (record_bytes): a second
        # bound beside max_queue, so large captured bodies cannot hold gigabytes.
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        self._bytes_lock = threading.Lock()  # added on the event loop, taken off on this thread
        # Told of each committed batch (live events); set once the server's loop is running.
        self.on_written: Callable[[Sequence[InferenceRecord]], None] | None = None
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queue)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retry_max_s = retry_max_s
        self.dropped = 0
        self._drop_lock = threading.Lock()  # drops are counted from the event loop and this thread
        self.written = 0
        self.write_errors = 0
        self._holding = 0  # records taken off the queue, not yet committed
        self._trim_due = False  # batches were written since the heap was last trimmed
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()  # set by flush() and stop(): a batch is wanted now
        self._deadline = float("inf")
        self._last_error_log = 0.0

    # -- request path -------------------------------------------------------------------------

    def enqueue(self, record: InferenceRecord) -> bool:
        """Hand a record to the writer without blocking; False (and counted) if the queue is full,
        in records (``max_queue``) or in bytes (``max_bytes``)."""
        size = self._sizer(record)
        with self._bytes_lock:
            if self.max_bytes is not None and self.queued_bytes + size > self.max_bytes:
                over = True
            else:
                over = False
                self.queued_bytes += size
        if over:
            self._drop(1, "queue_bytes")
            return False
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._release(size)
            self._drop(1, "queue_full")
            return False
        return True

    def _release(self, size: int) -> None:
        with self._bytes_lock:
            self.queued_bytes -= size

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def depth(self) -> int:
        """Records not yet committed: queued, or in the batch the thread is collecting or writing."""
        return self._queue.qsize() + self._holding

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="telemetry-writer", daemon=True)
        self._thread.start()
        atexit.register(self.stop)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Block until every record enqueued before this call is committed (or the timeout)."""
        if not self.running:
            return False
        deadline = time.monotonic() + timeout_s
        marker = _Flush()
        try:
            self._queue.put(marker, timeout=timeout_s)
        except queue.Full:
            return False
        self._wake.set()
        return marker.done.wait(max(0.0, deadline - time.monotonic()))

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Write what is queued, then end the thread. Bounded: gives up after ``timeout_s``.

        Records still unwritten at the deadline (the database is down) are counted as dropped and
        logged, never lost silently. Safe to call twice (lifespan shutdown, then atexit).
        """
        thread = self._thread
        if thread is None or not thread.is_alive():
            return True
        self._deadline = time.monotonic() + timeout_s
        self._stopping.set()
        self._wake.set()
        with contextlib.suppress(queue.Full):  # full: the thread is busy and checks the flag anyway
            self._queue.put_nowait(_WAKE)
        thread.join(timeout_s + 1.0)
        if thread.is_alive():
            logger.error("telemetry writer did not finish within %.1f s; %d record(s) unwritten",
                         timeout_s, self.depth)  # fmt: skip
            return False
        return True

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                batch, flushes = self._collect()
                if batch:
                    self._write(batch)  # written or dropped: either way no longer held
                    self._holding = 0
                    self._release(sum(self._sizer(record) for record in batch))
                    del batch  # not held while waiting for the next one
                    self._trim_due = True
                else:  # a whole interval without records: give the connection back
                    self._close_connection()
                    if self._trim_due:  # and the memory a burst left behind
                        self._trim_due = False
                        release_free_memory()
                for marker in flushes:
                    marker.done.set()
                if self._metrics:
                    prometheus.TELEMETRY_QUEUE_DEPTH.set(self.depth)
                if self._stopping.is_set() and self._queue.empty():
                    return
        finally:
            self._close_connection()

    def _collect(self) -> tuple[list[InferenceRecord], list[_Flush]]:
        """Up to ``batch_size`` records: what arrives within ``flush_interval_s`` of the first one.

        The thread wakes once per batch, not once per record: after the first record it sleeps
        until the batch is due (or a flush or stop wakes it) and then takes what has arrived.
        Blocking on the queue for every record would switch threads on every request.
        """
        batch: list[InferenceRecord] = []
        flushes: list[_Flush] = []
        try:
            wait = 0.0 if self._stopping.is_set() else self.flush_interval_s
            item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
        except queue.Empty:
            return batch, flushes
        deadline = time.monotonic() + self.flush_interval_s
        while True:
            if isinstance(item, _Flush):
                flushes.append(item)
                break  # write now: the flusher waits for everything before its marker
            if item is not _WAKE:
                batch.append(item)  # type: ignore[arg-type]
                self._holding = len(batch)
            if len(batch) >= self.batch_size:
                break
            try:
                item = self._queue.get_nowait()
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if self._stopping.is_set() or remaining <= 0:
                break
            self._wake.wait(remaining)
            self._wake.clear()
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
        return batch, flushes

    def _write(self, batch: list[InferenceRecord]) -> None:
        attempt = 0
        while True:
            try:
                self._write_batch(batch)
            except (DataError, IntegrityError):
                self._close_connection()
                self._isolate(batch)
                return
            except DatabaseError as exc:
                self.write_errors += 1
                if self._metrics:
                    prometheus.TELEMETRY_WRITE_ERRORS.inc()
                self._close_connection()
                self._log_outage(exc)
                if not self._backoff(attempt):
                    self._drop(len(batch), "shutdown")
                    logger.error("telemetry: %d record(s) lost: database unavailable at shutdown", len(batch))
                    return
                attempt += 1
            except Exception:
                logger.exception("telemetry: cannot convert a batch of %d record(s)", len(batch))
                self._isolate(batch)
                return
            else:
                self.written += len(batch)
                if self._metrics:
                    prometheus.TELEMETRY_WRITTEN.inc(len(batch))
                self._announce(batch)
                if attempt:
                    logger.warning("telemetry: database back; wrote %d delayed record(s)", len(batch))
                return

    def _announce(self, batch: list[InferenceRecord]) -> None:
        if self.on_written is None:
            return
        try:
            self.on_written(batch)
        except Exception:  # a live dashboard must never cost a batch its retry or its count
            logger.warning("telemetry: live event for a batch of %d failed", len(batch), exc_info=True)

    def _isolate(self, batch: list[InferenceRecord]) -> None:
        """Retry halves of a rejected batch so only the offending record is dropped."""
        if len(batch) == 1:
            logger.exception("telemetry: dropping a record the database rejects: %r", batch[0].request_id)
            self._drop(1, "rejected")
            return
        middle = len(batch) // 2
        self._write(batch[:middle])
        self._write(batch[middle:])

    def _backoff(self, attempt: int) -> bool:
        """Sleep before the next try; False when stopping and the deadline has passed."""
        delay = min(self.retry_max_s, RETRY_BASE_S * 2**attempt) * random.uniform(0.5, 1.0)  # noqa: S311
        if self._stopping.is_set():
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                return False
            delay = min(delay, remaining)
        time.sleep(delay)
        return True

    def _drop(self, count: int, reason: str) -> None:
        with self._drop_lock:
            self.dropped += count
        if self._metrics:
            prometheus.TELEMETRY_DROPPED.labels(reason).inc(count)
        now = time.monotonic()
        if now - self._last_error_log > LOG_EVERY_S:
            self._last_error_log = now
            logger.error("telemetry: %d record(s) dropped so far (latest reason: %s)", self.dropped, reason)

    def _log_outage(self, exc: DatabaseError) -> None:
        now = time.monotonic()
        if now - self._last_error_log > LOG_EVERY_S:
            self._last_error_log = now
            logger.warning("telemetry: database write failed (%s: %s); retrying, %d record(s) kept",
                           type(exc).__name__, exc, self.depth)  # fmt: skip

    @staticmethod
    def _close_connection() -> None:
        try:
            connection.close()
        except Exception:  # a broken connection may fail to close; it is discarded either way
            logger.debug("telemetry: closing a broken connection failed", exc_info=True)
