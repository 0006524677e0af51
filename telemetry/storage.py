"""Telemetry's database writes, on the writer thread: a batch's rows and its aggregates in one
transaction (:func:`inference_logs_write`), and pruning (:func:`inference_logs_prune`).
``telemetry.seeding`` builds aggregate rows with :func:`add_program_stats` and the retention
windows of :data:`BUCKET_RETENTION`.
"""

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import DateTimeField, F, Q, Value
from django.db.models.functions import Coalesce, Greatest

from telemetry.aggregation import VersionDeltas, aggregate, aggregate_keys, aggregate_versions
from telemetry.counters import ProgramCounters
from telemetry.records import InferenceRecord, to_log_values
from telemetry.sketches import LatencySketch


def inference_logs_write(records: Sequence[InferenceRecord]) -> None:
    """Insert a batch of rows and add it to the aggregates, in one transaction.

    All or nothing: a retried batch is never counted twice, and the aggregates always match the
    rows. The aggregates are incremented with ``F()`` so concurrent writers (other workers, other
    machines) add up instead of overwriting each other; the latency sketch of a ``ProgramStats``
    row is read, merged and written back under the row's lock (:func:`_merge_stats`).
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
    versions = aggregate_versions(records)
    with transaction.atomic():
        insert_rows(InferenceLog, rows)
        for (period_s, start, program), counters in sorted(buckets.items()):
            add_program_stats(program, period_s, start, counters)
        for (program, version), deltas in sorted(versions.items(), key=lambda item: item[0]):
            add_version_stats(program, version, deltas)
        for (key_id, day), deltas in sorted(key_days.items()):
            _increment(KeyDailyStats, {"api_key_id": key_id, "day": day}, deltas)


def add_program_stats(
    program: str, period_s: int, start: datetime, counters: ProgramCounters, write_row: Any = None
) -> None:
    """Add a bucket's counters to its rows; ``write_row`` (default :func:`aggregate_row_write`) writes each
    (the seeder collects them instead, to insert the new rows in bulk: ``telemetry.seeding``)."""
    from telemetry.models import ModelStats, ProgramStats

    write_row = write_row or aggregate_row_write
    deltas = _program_deltas(counters)
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


def _program_deltas(counters: ProgramCounters) -> dict[str, float]:
    return {
        "call_count": counters.call_count,
        "success_count": counters.success_count,
        "error_count": counters.error_count,
        "prompt_tokens": counters.prompt_tokens,
        "completion_tokens": counters.completion_tokens,
        "total_tokens": counters.total_tokens,
        "cost_usd": counters.cost_usd,
        "duration_ms_sum": counters.latency.total_ms,
    }


def add_version_stats(program: str, version: str, deltas: VersionDeltas) -> None:
    """Add a batch's calls of one version to its all-time row (merged like a program's)."""
    from telemetry.models import VersionStats

    counters = deltas.counters
    increments = {**_program_deltas(counters), "shadow_count": deltas.shadows}
    last = datetime.fromtimestamp(counters.last_call_ts or 0, tz=UTC)
    _merge_stats(VersionStats, {"program": program, "version": version}, increments, counters.latency, last)


def aggregate_row_write(
    model: Any,
    keys: dict[str, Any],
    deltas: dict[str, float],
    last_call_at: datetime | None = None,
    latency: LatencySketch | None = None,
) -> None:
    """The writer's way to add to an aggregate row: a program's row (it has a latency sketch)
    merges under the row lock, a model's is incremented."""
    if latency is not None:
        _merge_stats(model, keys, deltas, latency, last_call_at)
    else:
        _increment(model, keys, deltas)


def _merge_stats(
    model: Any,
    keys: dict[str, Any],
    deltas: dict[str, float],
    latency: LatencySketch,
    last_call_at: datetime | None,
) -> None:
    """Add a batch to a ``ProgramStats`` (or ``VersionStats``) row: counts by ``F()``, the sketch
    merged under the row lock.

    ``SELECT ... FOR UPDATE`` (PostgreSQL) holds the row until the batch's transaction commits,
    so a writer in another process waits and then merges into this one's result: no lost update.
    SQLite ignores ``FOR UPDATE``; its transaction already holds the database's write lock (the
    rows were inserted first). Rows are visited in the same sorted order by every writer, so two
    writers cannot deadlock.
    """
    locked = model.objects.select_for_update().filter(**keys).values_list("pk", "latency_sketch")
    stored = locked.first()
    if stored is None:
        created = {**keys, **deltas, "last_call_at": last_call_at, "latency_sketch": latency.to_json()}
        try:
            with transaction.atomic():  # a savepoint: another process may create the row first
                model.objects.create(**created)
            return
        except IntegrityError:
            stored = locked.get()  # that process's row, committed: lock it and merge into it
    pk, sketch_json = stored
    merged = LatencySketch.from_json(sketch_json)
    merged.merge(latency)
    updates = _updates(deltas, last_call_at)
    updates["latency_sketch"] = merged.to_json()
    model.objects.filter(pk=pk).update(**updates)


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
