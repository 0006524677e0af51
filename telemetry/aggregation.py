"""A batch of records as counter deltas (pure: no database): per program and time bucket, per API
key and day. The writer adds them to the aggregate rows (:mod:`telemetry.storage`); the process's
live counters are counted with :func:`count` too, so both agree.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from telemetry.counters import ProgramCounters
from telemetry.records import InferenceRecord


def aggregate(records: Iterable[InferenceRecord]) -> dict[tuple[int, datetime, str], ProgramCounters]:
    """Per (period, bucket start, program): the counters of the records that fall in it."""
    from telemetry.models import EPOCH, PERIODS

    buckets: dict[tuple[int, datetime, str], ProgramCounters] = {}
    for record in records:
        for period_s in PERIODS:
            start = EPOCH if period_s == 0 else _bucket_start(record.finished_at, period_s)
            key = (period_s, start, record.program)
            counters = buckets.get(key) or buckets.setdefault(key, ProgramCounters(record.program))
            count(counters, record)
    return buckets


@dataclass(slots=True)
class VersionDeltas:
    counters: ProgramCounters
    shadows: int = 0


def aggregate_versions(records: Iterable[InferenceRecord]) -> dict[tuple[str, str], VersionDeltas]:
    """Per (program, version), for the records of a versioned call: its counters and shadow runs."""
    versions: dict[tuple[str, str], VersionDeltas] = {}
    for record in records:
        if not record.version:
            continue
        key = (record.program, record.version[:20])
        deltas = versions.get(key) or versions.setdefault(key, VersionDeltas(ProgramCounters(record.program)))
        count(deltas.counters, record)
        deltas.shadows += record.shadow
    return versions


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


def count(counters: ProgramCounters, record: InferenceRecord) -> None:
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
