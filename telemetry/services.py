"""Telemetry writes: record a finished request (request path), persist batches (writer thread),
rebuild counters, prune, and the process's start-up and shutdown hooks.

On the request path only the ``programs.events`` subscribers run (:func:`on_request_finished`):
in-memory counter and Prometheus updates plus a ``put_nowait``. No ORM, no file I/O, no JSON on
the loop.
"""

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import DateTimeField, F, Q, Value
from django.db.models.functions import Coalesce, Greatest

from apikeys.context import current_caller
from programs import events
from programs.runtime import get_runtime
from programs.usage import UsageSnapshot
from telemetry import prometheus, tracing
from telemetry import records as telemetry_records
from telemetry.counters import PROCESS_COUNTERS, ProgramCounters
from telemetry.live import LivePublisher
from telemetry.records import Body, InferenceRecord, to_log_values
from telemetry.sketches import LatencySketch
from telemetry.writer import TelemetryWriter

logger = logging.getLogger(__name__)


# -- request path --------------------------------------------------------------------------------


def on_request_started(started: events.RequestStarted) -> None:
    prometheus.IN_FLIGHT.labels(started.program).inc()


def on_request_finished(done: events.RequestFinished) -> None:
    """Record one finished program call, through whichever door it came (``programs.calls``)."""
    prometheus.IN_FLIGHT.labels(done.program).dec()
    capture = capture_io(done.program)
    record = InferenceRecord(
        program=done.program,
        model_alias=done.model_alias,
        model=done.model,
        request_id=done.request_id,
        status_code=done.status_code,
        finished_at=done.finished_at,
        duration_ms=done.duration_ms,
        usage=UsageSnapshot(done.prompt_tokens, done.completion_tokens, done.cost_usd, done.lm_calls),
        error_type=done.error_type,
        error_detail=done.error_detail,
        inputs=_capture(done.inputs or b"") if capture else None,
        outputs=_capture(done.outputs) if capture and done.outputs is not None else None,
        source=done.source,
        entry=done.entry,
    )
    if (caller := current_caller.get()) is not None:  # set by the API-key check (apikeys)
        record.api_key_id, record.api_key_name = caller.key_id, caller.name
    inference_log_enqueue(record)


def on_lm_retry(failed: events.LMRetry) -> None:
    prometheus.LM_ATTEMPTS.labels(failed.model_alias, "failed").inc()
    if failed.retrying:
        prometheus.LM_RETRIES.labels(failed.model_alias, failed.error_type).inc()


def on_circuit_changed(change: events.CircuitChanged) -> None:
    if change.state == "open":
        prometheus.CIRCUIT_OPENS.labels(change.model_alias).inc()


def subscribe_request_events() -> None:
    """Called once from ``TelemetryConfig.ready``: every program call of the process is recorded."""
    events.subscribe(events.request_started, on_request_started)
    events.subscribe(events.request_finished, on_request_finished)
    events.subscribe(events.lm_retry, on_lm_retry)
    events.subscribe(events.circuit_changed, on_circuit_changed)


def inference_log_enqueue(record: InferenceRecord) -> bool:
    """Count a finished request at once (counters, Prometheus) and queue it for the database."""
    record.worker = telemetry_records.WORKER
    record.trace_id = tracing.current_trace_id()  # the program's (or server's) span is still current
    _count(PROCESS_COUNTERS.get(record.program), record)
    _observe(record, record.usage)
    return telemetry_writer().enqueue(record)


def _observe_attempts(record: InferenceRecord, call: dict[str, Any]) -> None:
    """The request that answered an LM call (the failed ones are counted by :func:`on_lm_retry`)."""
    alias = call.get("model_alias") or ""
    if not alias or call.get("cache_hit"):  # an LM the program built, no model answered, the cache
        return
    prometheus.LM_ATTEMPTS.labels(alias, "ok").inc()
    if alias != record.model_alias:
        prometheus.LM_FALLBACKS.labels(record.program, alias).inc()


def _observe(record: InferenceRecord, usage: UsageSnapshot) -> None:
    program = record.program
    prometheus.REQUESTS.labels(program, prometheus.outcome(record.status_code)).inc()
    reason = prometheus.rejection_reason(record.status_code)
    if reason is not None:
        prometheus.REJECTED.labels(program, reason).inc()
    if record.duration_ms is not None:
        prometheus.LATENCY.labels(program).observe(record.duration_ms / 1000)
    for call in usage.lm_calls:
        model = call["model"]
        prometheus.LM_CALLS.labels(model).inc()
        _observe_attempts(record, call)
        if call["prompt_tokens"]:
            prometheus.TOKENS.labels(model, "prompt").inc(call["prompt_tokens"])
        if call["completion_tokens"]:
            prometheus.TOKENS.labels(model, "completion").inc(call["completion_tokens"])
        if call["cost_usd"]:
            prometheus.COST.labels(model).inc(call["cost_usd"])


def capture_io(program_name: str) -> bool:
    """``programs.<Name>.capture_io`` in dspy.config.yaml, else ``TELEMETRY_CAPTURE_IO``."""
    options = get_runtime().config.config.programs.get(program_name)
    explicit = getattr(options, "capture_io", None)
    return settings.TELEMETRY_CAPTURE_IO if explicit is None else explicit


def _capture(body: bytes) -> Body:
    size = len(body)
    return Body(body if size <= settings.TELEMETRY_MAX_CAPTURE_BYTES else None, size)


# -- the writer ----------------------------------------------------------------------------------

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


# -- batches (writer thread) ---------------------------------------------------------------------


def inference_logs_write(records: Sequence[InferenceRecord]) -> None:
    """Insert a batch of rows and add it to the aggregates, in one transaction.

    All or nothing: a retried batch is never counted twice, and the aggregates always match the
    rows. The aggregates are incremented with ``F()`` so concurrent writers (other workers, other
    machines) add up instead of overwriting each other; the latency sketch of a ``ProgramStats``
    row is read, merged and written back under the row's lock (:func:`_merge_program_stats`).
    The rows go in by ``COPY`` (PostgreSQL) or one ``executemany`` (SQLite), not ``bulk_create``
    (:mod:`telemetry.inserts`): on SQLite that first write takes the database's write lock, which
    the transaction then holds until it commits, so no other writer runs between the read of a
    sketch and its update.
    """
    from telemetry.inserts import insert_rows
    from telemetry.models import InferenceLog, KeyDailyStats

    rows = [to_log_values(record) for record in records]
    buckets = aggregate(records)
    key_days = aggregate_keys(records)
    with transaction.atomic():
        insert_rows(InferenceLog, rows)
        for (period_s, start, program), counters in sorted(buckets.items()):
            _add_program_stats(program, period_s, start, counters)
        for (key_id, day), deltas in sorted(key_days.items()):
            _increment(KeyDailyStats, {"api_key_id": key_id, "day": day}, deltas)


def aggregate(records: Iterable[InferenceRecord]) -> dict[tuple[int, datetime, str], ProgramCounters]:
    """Per (period, bucket start, program): the counters of the records that fall in it."""
    from telemetry.models import EPOCH, PERIODS

    buckets: dict[tuple[int, datetime, str], ProgramCounters] = {}
    for record in records:
        for period_s in PERIODS:
            start = EPOCH if period_s == 0 else _bucket_start(record.finished_at, period_s)
            key = (period_s, start, record.program)
            counters = buckets.get(key) or buckets.setdefault(key, ProgramCounters(record.program))
            _count(counters, record)
    return buckets


def aggregate_keys(records: Iterable[InferenceRecord]) -> dict[tuple[int, date], dict[str, float]]:
    """Per (API key, UTC day): requests, tokens and cost of the records made with a key."""
    days: dict[tuple[int, date], dict[str, float]] = {}
    for record in records:
        if record.api_key_id is None:
            continue
        day = datetime.fromtimestamp(record.finished_at, tz=UTC).date()
        deltas = days.setdefault((record.api_key_id, day), dict.fromkeys(KEY_DAY_FIELDS, 0))
        usage = record.usage
        deltas["request_count"] += 1
        deltas["prompt_tokens"] += usage.prompt_tokens
        deltas["completion_tokens"] += usage.completion_tokens
        deltas["cost_usd"] += usage.cost_usd or 0.0
    return days


KEY_DAY_FIELDS = ("request_count", "prompt_tokens", "completion_tokens", "cost_usd")


def _count(counters: ProgramCounters, record: InferenceRecord) -> None:
    """Add one finished request to a set of counters (the process's live ones, or a batch's)."""
    usage = record.usage
    counters.record(
        success=record.success,
        duration_ms=record.duration_ms,
        finished_at=record.finished_at,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost_usd=usage.cost_usd or 0.0,
        lm_calls=usage.lm_calls,
    )


def _bucket_start(ts: float, period_s: int) -> datetime:
    seconds = int(ts)
    return datetime.fromtimestamp(seconds - seconds % period_s, tz=UTC)


def _add_program_stats(
    program: str, period_s: int, start: datetime, counters: ProgramCounters, write_row: Any = None
) -> None:
    """Add a bucket's counters to its rows; ``write_row`` (default :func:`_write_row`) writes each
    (the seeder collects them instead, to insert the new rows in bulk: ``telemetry.seeding``)."""
    from telemetry.models import ModelStats, ProgramStats

    write_row = write_row or _write_row
    deltas: dict[str, float] = {
        "call_count": counters.call_count,
        "success_count": counters.success_count,
        "error_count": counters.error_count,
        "prompt_tokens": counters.prompt_tokens,
        "completion_tokens": counters.completion_tokens,
        "total_tokens": counters.total_tokens,
        "cost_usd": counters.cost_usd,
        "duration_ms_sum": counters.latency.total_ms,
    }
    last = datetime.fromtimestamp(counters.last_call_ts or 0, tz=UTC)
    keys = {"period_s": period_s, "period_start": start, "program": program}
    write_row(ProgramStats, keys, deltas, last, counters.latency)
    for model, usage in sorted(counters.models.items()):
        model_deltas = {
            "call_count": usage.call_count,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cost_usd": usage.cost_usd,
            "attempt_count": usage.attempt_count,
        }
        write_row(ModelStats, {**keys, "model": model[:200]}, model_deltas)


def _write_row(
    model: Any,
    keys: dict[str, Any],
    deltas: dict[str, float],
    last_call_at: datetime | None = None,
    latency: LatencySketch | None = None,
) -> None:
    """The writer's way to add to an aggregate row: a program's row (it has a latency sketch)
    merges under the row lock, a model's is incremented."""
    if latency is not None:
        _merge_program_stats(keys, deltas, latency, last_call_at)
    else:
        _increment(model, keys, deltas)


def _merge_program_stats(
    keys: dict[str, Any], deltas: dict[str, float], latency: LatencySketch, last_call_at: datetime | None
) -> None:
    """Add a batch to a ``ProgramStats`` row: counts by ``F()``, the sketch merged under the row lock.

    ``SELECT ... FOR UPDATE`` (PostgreSQL) holds the row until the batch's transaction commits,
    so a writer in another process waits and then merges into this one's result: no lost update.
    SQLite ignores ``FOR UPDATE``; its transaction already holds the database's write lock (the
    rows were inserted first). Rows are visited in the same sorted order by every writer, so two
    writers cannot deadlock.
    """
    from telemetry.models import ProgramStats

    locked = ProgramStats.objects.select_for_update().filter(**keys).values_list("pk", "latency_sketch")
    stored = locked.first()
    if stored is None:
        created = {**keys, **deltas, "last_call_at": last_call_at, "latency_sketch": latency.to_json()}
        try:
            with transaction.atomic():  # a savepoint: another process may create the row first
                ProgramStats.objects.create(**created)
            return
        except IntegrityError:
            stored = locked.get()  # that process's row, committed: lock it and merge into it
    pk, sketch_json = stored
    merged = LatencySketch.from_json(sketch_json)
    merged.merge(latency)
    updates = _updates(deltas, last_call_at)
    updates["latency_sketch"] = merged.to_json()
    ProgramStats.objects.filter(pk=pk).update(**updates)


def _updates(deltas: dict[str, float], last_call_at: datetime | None) -> dict[str, Any]:
    """``n = n + delta`` for each non-zero delta; ``last_call_at`` keeps the newest."""
    updates: dict[str, Any] = {name: F(name) + value for name, value in deltas.items() if value}
    if last_call_at is not None:
        stamp = Value(last_call_at, output_field=DateTimeField())
        updates["last_call_at"] = Greatest(Coalesce(F("last_call_at"), stamp), stamp)
    return updates


def _increment(model: Any, keys: dict[str, Any], deltas: dict[str, float]) -> None:
    """``UPDATE ... SET n = n + delta`` on the row, creating it first if no process has yet."""
    updates = _updates(deltas, None)
    if model.objects.filter(**keys).update(**updates):
        return
    try:
        with transaction.atomic():  # a savepoint: another process may create the row first
            model.objects.create(**keys, **deltas)
    except IntegrityError:
        model.objects.filter(**keys).update(**updates)


# -- retention -----------------------------------------------------------------------------------

# Time buckets finer than an hour only feed the dashboard's last hour / last day views.
BUCKET_RETENTION = {60: timedelta(days=2), 600: timedelta(days=8)}


def inference_logs_prune(
    older_than: timedelta, now: datetime | None = None, chunk: int = 10_000
) -> dict[str, int]:
    """Delete log rows older than ``older_than`` (and dashboard buckets past their window).

    Rows go in chunks of ``chunk``, each its own short transaction: the writer is never blocked for
    long (SQLite has one writer at a time; PostgreSQL locks only the rows being deleted). Each chunk
    is the next ``chunk`` rows below the previous one in (created_at, id) order, a range of the
    created_at index that starts where the last one ended, so a chunk never re-reads the index
    entries its predecessors left dead (which, until a vacuum, would make every chunk slower than
    the one before). Totals and hourly buckets are kept: the metrics and the week view read them,
    and they are small (one row per program per hour). Returns the rows deleted, the chunks and
    the longest chunk in ms.
    """
    from telemetry.models import InferenceLog, ModelStats, ProgramStats

    now = now or datetime.now(tz=UTC)
    deleted = {"logs": 0, "buckets": 0, "chunks": 0, "longest_chunk_ms": 0}
    old = InferenceLog.objects.filter(created_at__lt=now - older_than).order_by("-created_at", "-id")
    below = old
    while keys := list(below.values_list("created_at", "pk")[:chunk]):
        started = time.perf_counter()
        deleted["logs"] += InferenceLog.objects.filter(pk__in=[pk for _, pk in keys]).delete()[0]
        elapsed_ms = round((time.perf_counter() - started) * 1000)
        deleted["chunks"] += 1
        deleted["longest_chunk_ms"] = max(deleted["longest_chunk_ms"], elapsed_ms)
        created, pk = keys[-1]
        below = old.filter(created_at__lte=created).filter(Q(created_at__lt=created) | Q(pk__lt=pk))
    for period_s, keep in BUCKET_RETENTION.items():
        for stats in (ProgramStats, ModelStats):
            deleted["buckets"] += stats.objects.filter(
                period_s=period_s, period_start__lt=now - keep
            ).delete()[0]
    return deleted
