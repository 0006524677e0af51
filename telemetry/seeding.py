"""Realistic inference-log history, written fast, with aggregates that match it.

``manage.py seed_inference_logs`` uses this to give the read paths (admin list and dashboard,
``/api/logs``, ``/api/metrics``), pruning and the writer a table of production size to be measured
on (``loadtest/logs_at_scale.py``). Rows follow a daily rhythm over the chosen days, for several
programs, models, outcomes and front doors, with log-normal latencies (and a slow tail) and
tokens. They go to the database by the writer's own insert (``COPY`` on PostgreSQL, ``executemany``
on SQLite), prepared once per field rather than per value, which is what makes 10 million rows a
matter of minutes. The aggregates are counted with the writer's own code (``ProgramCounters`` per
minute, merged into 10-minute, hourly and all-time buckets) and added with its ``F()`` increments,
so ``/api/metrics`` and the dashboard agree with the rows, also on top of an existing history.
Buckets finer than an hour are kept only within their retention window, as pruning leaves them.
"""

import json
import math
import random
from bisect import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

from django.db import IntegrityError, connections, router, transaction

from telemetry.counters import ProgramCounters, merge
from telemetry.inserts import columns, prepared, write_values
from telemetry.models import EPOCH, HOUR, MINUTE, TEN_MINUTES, TOTAL, InferenceLog, ModelStats, ProgramStats
from telemetry.sketches import LatencySketch
from telemetry.storage import BUCKET_RETENTION, add_program_stats, aggregate_row_write

DEFAULT_PROGRAMS = ("SimplePredict", "AsyncPredict", "MultiStep")  # loadtest/fixture_project's
Deltas = dict[str, float]
# (model, keys, deltas, last call, latency sketch): what telemetry.storage.aggregate_row_write takes
BucketRow = tuple[Any, dict[str, Any], Deltas, datetime | None, LatencySketch | None]
CHUNK_ROWS = 20_000  # rows per COPY / executemany, each its own transaction

# (alias, model, USD per prompt token, per completion token); None: no known price.
MODELS: tuple[tuple[str, str, tuple[float, float] | None], ...] = (
    ("mock", "openai/mock-model", None),
    ("priced", "openai/gpt-4o-mini", (0.15e-6, 0.6e-6)),
    ("large", "openai/gpt-4o", (2.5e-6, 10e-6)),
)

# (status, weight, error type, message, whether the program ran). Refused requests (400, 422, 429,
# 503) have no duration and no LM call, as the service records them.
OUTCOMES: tuple[tuple[int, float, str, str, bool], ...] = (
    (200, 0.935, "", "", True),
    (422, 0.015, "ValidationError", '[{"loc": ["body", "question"], "msg": "Field required"}]', False),
    (400, 0.002, "ParseError", "Cannot parse request body", False),
    (429, 0.010, "AtCapacity", "program at capacity", False),
    (502, 0.020, "RateLimitError", "upstream LLM error 429: rate limit reached", True),
    (504, 0.006, "TimeoutError", "program timed out after 30 s", True),
    (500, 0.005, "ValueError", "program raised ValueError", True),
    (499, 0.005, "CancelledError", "client disconnected", True),
    (503, 0.002, "Draining", "server is shutting down", False),
)
# (source, entry, weight)
DOORS: tuple[tuple[str, str, float], ...] = (
    ("http", "", 0.70),
    ("gateway", "QuestionGateway", 0.10),
    ("batch", "", 0.10),
    ("stream", "", 0.05),
    ("mcp", "tool", 0.04),
    ("cron", "nightly-digest", 0.01),
)
API_KEYS: tuple[tuple[int | None, str], ...] = ((None, ""), (1, "team-search"), (2, "team-support"))
QUESTIONS = tuple(
    f"{verb} the {subject} of {thing}, in {words} words?"
    for verb in ("What is", "Summarise", "Explain", "Translate", "Classify", "List")
    for subject in ("purpose", "main risk", "history", "tone", "outcome", "cost")
    for thing in ("the attached contract", "this ticket", "the release notes", "our Q3 report")
    for words in (20, 50, 100)
)


def _bucket(ts: int, period_s: int) -> datetime:
    return datetime.fromtimestamp(ts - ts % period_s, tz=UTC)


def _cumulative(weights: Sequence[float]) -> list[float]:
    total = sum(weights)
    return [value / total for value in accumulate(weights)]


@dataclass(frozen=True)
class Profile:
    """How one program behaves: its model, LM calls per request, typical latency and prompt."""

    name: str
    alias: str
    model: str
    price: tuple[float, float] | None
    lm_calls: int
    median_ms: float
    prompt_tokens: int

    @classmethod
    def for_program(cls, index: int, name: str) -> "Profile":
        alias, model, price = MODELS[index % len(MODELS)]
        calls = 2 if index % 3 == 2 else 1
        return cls(name, alias, model, price, calls, 250.0 * (1 + index % 4) * calls, 300 + 150 * (index % 5))


@dataclass
class SeedResult:
    rows: int = 0
    buckets: int = 0
    first: datetime | None = None
    last: datetime | None = None
    per_program: dict[str, int] = field(default_factory=dict)


class Seeder:
    """Writes ``rows`` rows spread over ``days`` days ending at ``now`` (time order, like the writer)."""

    def __init__(self, programs: Sequence[str], rows: int, days: float, now: datetime, seed: int = 1) -> None:
        self.profiles = [Profile.for_program(i, name) for i, name in enumerate(programs)]
        self.rows = rows
        self.now = now
        self.rng = random.Random(seed)  # noqa: S311 - plausible data, not secrets
        self.run_tag = f"{seed:04x}{int(now.timestamp()) & 0xFFFFFF:06x}"
        end = int(now.timestamp()) // MINUTE * MINUTE
        self.minutes = range(end - max(1, round(days * 86400 / MINUTE)) * MINUTE, end, MINUTE)
        self._program_cdf = _cumulative([1.0 / (1 + i * 0.5) for i in range(len(self.profiles))])
        self._outcome_cdf = _cumulative([weight for _, weight, *_ in OUTCOMES])
        self._door_cdf = _cumulative([weight for *_, weight in DOORS])
        self._inputs = [json.dumps({"question": q}) for q in QUESTIONS]
        self._buckets: dict[tuple[int, datetime, str], ProgramCounters] = {}

    def run(self, progress: Callable[[int], None] | None = None) -> SeedResult:
        """Write the rows in chunks (one transaction each), then the aggregates (one transaction)."""
        model = InferenceLog
        connection = connections[router.db_for_write(model)]
        fields = columns(model)
        defaults = {f.name: prepared(f, f.get_default(), connection) for f in fields}
        created = next(f for f in fields if f.name == "created_at")
        adapt_time = None if connection.vendor == "postgresql" else created
        result = SeedResult()
        buffer: list[tuple[Any, ...]] = []
        names = [f.name for f in fields]
        for minute, count in zip(self.minutes, self._per_minute(), strict=True):
            minute_counters: dict[str, ProgramCounters] = {}
            for offset in sorted(self.rng.random() * MINUTE for _ in range(count)):
                row = self._row(minute + offset, result.rows, minute_counters)
                if adapt_time is not None:
                    row["created_at"] = prepared(adapt_time, row["created_at"], connection)
                buffer.append(tuple([row[n] if n in row else defaults[n] for n in names]))
                result.rows += 1
            self._roll_up(minute, minute_counters, result)
            if len(buffer) >= CHUNK_ROWS:
                self._write(model, fields, buffer, progress, result)
        self._write(model, fields, buffer, progress, result)
        result.buckets = self._write_aggregates()
        if self.minutes:
            result.first = datetime.fromtimestamp(self.minutes[0], tz=UTC)
            result.last = datetime.fromtimestamp(self.minutes[-1] + MINUTE, tz=UTC)
        return result

    def _per_minute(self) -> list[int]:
        """Rows in each minute: a daily rhythm (peak mid-afternoon UTC), quieter weekends, ``rows`` in all."""
        weights = []
        for start in self.minutes:
            moment = datetime.fromtimestamp(start, tz=UTC)
            day = (moment.hour * 60 + moment.minute) / 1440
            weekend = 0.6 if moment.weekday() >= 5 else 1.0
            weights.append(weekend * (1.0 + 0.7 * math.sin(2 * math.pi * (day - 0.375))))
        cumulative = _cumulative(weights)
        counts, placed = [], 0
        for share in cumulative:
            upto = round(share * self.rows)
            counts.append(upto - placed)
            placed = upto
        return counts

    def _row(self, ts: float, index: int, minute_counters: dict[str, ProgramCounters]) -> dict[str, Any]:
        rng = self.rng
        profile = self.profiles[bisect(self._program_cdf, rng.random())]
        status, _, error_type, message, ran = OUTCOMES[bisect(self._outcome_cdf, rng.random())]
        source, entry, _ = DOORS[bisect(self._door_cdf, rng.random())]
        key_id, key_name = API_KEYS[index % len(API_KEYS)]
        success = status < 400
        duration = None
        prompt = completion = 0
        cost: float | None = 0.0
        calls: list[dict[str, Any]] = []
        if ran:
            duration = self._duration(profile, status)
            prompt, completion, cost, calls = self._lm_calls(profile, status, duration)
        question = self._inputs[index % len(self._inputs)]
        version = self._version(index)
        counters = minute_counters.get(profile.name) or minute_counters.setdefault(
            profile.name, ProgramCounters(profile.name)
        )
        counters.record(
            success=success, duration_ms=duration, finished_at=ts, prompt_tokens=prompt,
            completion_tokens=completion, cost_usd=cost or 0.0, lm_calls=calls,
        )  # fmt: skip
        return {
            "program": profile.name,
            "model_alias": profile.alias,
            "model": profile.model,
            "request_id": f"seed-{self.run_tag}-{index:010d}",
            "worker": f"seed-host-{index % 3}:{4100 + index % 4}",
            "api_key_id": key_id,
            "api_key_name": key_name,
            "source": source,
            "entry": entry,
            "inputs": question,
            "outputs": json.dumps({"answer": f"Echo: {index}"}) if success else None,
            "success": success,
            "status_code": status,
            "error_type": error_type,
            "error_message": message,
            "duration_ms": duration,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "cost_usd": cost,
            "lm_calls": json.dumps(calls),
            "version": version,
            "created_at": datetime.fromtimestamp(ts, tz=UTC),
        }

    def _version(self, index: int) -> str:
        """Releases over time: v1 for the first half, then v2, then v3 canaried at 80% of the last
        tenth (drawn per call, as a weighted alias splits traffic: never in step with the ids)."""
        position = index / max(self.rows, 1)
        if position < 0.5:
            return "v1"
        if position < 0.9 or self.rng.random() < 0.2:
            return "v2"
        return "v3"

    def _duration(self, profile: Profile, status: int) -> float:
        if status == 504:
            return round(30_000 + self.rng.random() * 50, 3)
        duration = self.rng.lognormvariate(math.log(profile.median_ms), 0.45)
        if self.rng.random() < 0.01:  # the slow tail: long generations, provider hiccups
            duration *= 3 + 7 * self.rng.random()
        return round(duration, 3)

    def _lm_calls(
        self, profile: Profile, status: int, duration: float
    ) -> tuple[int, int, float | None, list[dict[str, Any]]]:
        failed = status in (502, 504)
        calls = []
        for _ in range(profile.lm_calls):
            prompt = max(20, int(self.rng.gauss(profile.prompt_tokens, profile.prompt_tokens * 0.3)))
            completion = 0 if failed else max(1, int(self.rng.lognormvariate(math.log(120), 0.5)))
            price = profile.price
            cost = None if price is None else round(prompt * price[0] + completion * price[1], 8)
            calls.append({
                "model": profile.model, "prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion, "cost_usd": cost,
                "duration_ms": round(duration / profile.lm_calls, 2),
                "error": "RateLimitError" if status == 502 else None, "cache_hit": False,
            })  # fmt: skip
        prompt = sum(call["prompt_tokens"] for call in calls)
        completion = sum(call["completion_tokens"] for call in calls)
        costs = [call["cost_usd"] for call in calls if call["cost_usd"] is not None]
        return prompt, completion, (round(sum(costs), 8) if costs else None), calls

    def _roll_up(self, minute: int, counters: dict[str, ProgramCounters], result: SeedResult) -> None:
        """A finished minute into its buckets: kept as a minute bucket only within retention."""
        now = self.now.timestamp()
        for program, minute_counters in counters.items():
            result.per_program[program] = result.per_program.get(program, 0) + minute_counters.call_count
            for period_s in (MINUTE, TEN_MINUTES, HOUR, TOTAL):
                keep = BUCKET_RETENTION.get(period_s)
                if keep is not None and minute < now - keep.total_seconds():
                    continue
                start = EPOCH if period_s == TOTAL else _bucket(minute, period_s)
                key = (period_s, start, program)
                held = self._buckets.get(key)
                self._buckets[key] = merge(held, minute_counters) if held else minute_counters

    def _write(
        self,
        model: type[InferenceLog],
        fields: list[Any],
        buffer: list[tuple[Any, ...]],
        progress: Callable[[int], None] | None,
        result: SeedResult,
    ) -> None:
        with transaction.atomic():
            write_values(model, fields, buffer)
        buffer.clear()
        if progress is not None:
            progress(result.rows)

    def _write_aggregates(self) -> int:
        """Every bucket once, through the writer's own mapping of counters to columns.

        Rows no process has written yet (nearly all of a seed) are inserted in bulk: the ORM's
        ``F()`` increments cost ~15 ms of CPU per bucket, minutes for a month of buckets. Rows that
        exist get those increments, so a seed adds to a history instead of replacing it.
        """
        pending: list[BucketRow] = []

        def collect(
            model: Any, keys: dict[str, Any], deltas: Deltas, last_call_at: Any = None, latency: Any = None
        ) -> None:
            pending.append((model, keys, deltas, last_call_at, latency))

        for (period_s, start, program), counters in sorted(self._buckets.items()):
            add_program_stats(program, period_s, start, counters, write_row=collect)
        with transaction.atomic():
            for model in (ProgramStats, ModelStats):
                rows = [row for row in pending if row[0] is model]
                existing = set(model.objects.values_list(*_key_fields(model)))
                fresh = [row for row in rows if _key(row) not in existing]
                for start in range(0, len(fresh), 2000):
                    _insert_buckets(model, fresh[start : start + 2000])
                for row in rows:
                    if _key(row) in existing:
                        aggregate_row_write(*row)
        return len(self._buckets)


def _key_fields(model: Any) -> tuple[str, ...]:
    return ("period_s", "period_start", "program", "model") if model is ModelStats else (
        "period_s", "period_start", "program")  # fmt: skip


def _key(row: BucketRow) -> tuple[Any, ...]:
    model, keys, *_ = row
    return tuple(keys[name] for name in _key_fields(model))


def _insert_buckets(model: Any, rows: list[BucketRow]) -> None:
    """New aggregate rows in bulk, as :func:`telemetry.storage.aggregate_row_write` creates one; a row a
    running writer created meanwhile makes the chunk go row by row, the writer's way."""
    objects = [model(**keys, **deltas, **_extra(last, latency)) for _, keys, deltas, last, latency in rows]
    try:
        with transaction.atomic():
            model.objects.bulk_create(objects)
    except IntegrityError:
        for row in rows:
            aggregate_row_write(*row)


def _extra(last_call_at: datetime | None, latency: LatencySketch | None) -> dict[str, Any]:
    """The columns a program row has beyond its counts: its last call and its latency sketch."""
    extra: dict[str, Any] = {}
    if last_call_at is not None:
        extra["last_call_at"] = last_call_at
    if latency is not None:
        extra["latency_sketch"] = latency.to_json()
    return extra
