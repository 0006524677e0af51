"""Telemetry reads. Metrics and the dashboard read only the aggregates, never scan ``InferenceLog``.

Every function issues a fixed number of indexed queries whatever the number of log rows:
``program_stats_list`` two, ``inference_log_page`` one, ``dashboard`` four, ``key_spend_list`` two.
"""

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from django.db import connections, router, transaction
from django.db.models import Q

from telemetry.counters import ModelUsage, ProgramCounters
from telemetry.models import (
    EPOCH,
    HOUR,
    MINUTE,
    TEN_MINUTES,
    TOTAL,
    InferenceLog,
    KeyDailyStats,
    ModelStats,
    ProgramStats,
    VersionStats,
)
from telemetry.sketches import LatencySketch

SortBy = Literal["calls", "name", "latency", "cost", "tokens", "last_call"]
Order = Literal["asc", "desc"]


def program_stats_totals(programs: Iterable[str] | None = None) -> dict[str, ProgramCounters]:
    """All-time counters per program, summed over every process that ever wrote (two queries)."""
    stats = ProgramStats.objects.filter(period_s=TOTAL)
    models = ModelStats.objects.filter(period_s=TOTAL)
    if programs is not None:
        names = list(programs)
        stats, models = stats.filter(program__in=names), models.filter(program__in=names)
    totals = {row.program: counters_from_row(row) for row in stats}
    for row in models:
        counters = totals.get(row.program)
        if counters is not None:
            counters.models[row.model] = ModelUsage(
                row.call_count, row.prompt_tokens, row.completion_tokens, row.cost_usd, row.attempt_count
            )
    return totals


def counters_from_row(row: ProgramStats | VersionStats) -> ProgramCounters:
    return ProgramCounters(
        program=row.program,
        call_count=row.call_count,
        success_count=row.success_count,
        error_count=row.error_count,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        total_tokens=row.total_tokens,
        cost_usd=row.cost_usd,
        last_call_ts=row.last_call_at.timestamp() if row.last_call_at else None,
        latency=sketch_from_row(row),
    )


def sketch_from_row(row: ProgramStats | VersionStats) -> LatencySketch:
    """The latencies of every worker and machine that wrote to the row, merged (one sketch)."""
    return LatencySketch.from_json(row.latency_sketch, row.duration_ms_sum)


def program_stats_list(
    programs: Sequence[str], sort_by: SortBy = "calls", order: Order = "desc"
) -> list[ProgramCounters]:
    """Every served program, zeros for those never called, sorted like dspy-cli's ``/api/metrics``."""
    totals = program_stats_totals(programs)
    listing = [totals.get(name) or ProgramCounters(name) for name in programs]
    return sort_counters(listing, sort_by, order)


def sort_counters(listing: list[ProgramCounters], sort_by: SortBy, order: Order) -> list[ProgramCounters]:
    keys: dict[str, Any] = {
        "calls": lambda c: c.call_count,
        "name": lambda c: c.program,
        "latency": lambda c: c.latency.mean() or 0.0,
        "cost": lambda c: c.cost_usd,
        "tokens": lambda c: c.total_tokens,
        "last_call": lambda c: c.last_call_ts or 0.0,
    }
    return sorted(listing, key=keys[sort_by], reverse=order == "desc")


def program_stats_get(program: str) -> ProgramCounters:
    return program_stats_totals([program]).get(program) or ProgramCounters(program)


def inference_log_list(program: str, limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` records of a program (one query on the (program, created_at) index)."""
    return inference_log_page(program, limit).logs


@dataclass
class LogPage:
    logs: list[dict[str, Any]]
    next: str | None  # the ``before`` cursor of the next (older) page; None on the last page


NEWEST_FIRST = ("-created_at", "-id")


@contextmanager
def newest_rows_plan() -> Iterator[None]:
    """Reads of the newest rows of one program, or of the failures, planned on their own index.

    The (program, created_at, id) index and the failures' partial one give those rows in order.
    PostgreSQL may instead walk the created_at index backwards (sorting ties on id, an
    "incremental sort") and filter: with matches assumed spread evenly that looks cheap, but it
    reads every row written since the newest match. Behind 100,000 rows of another program (or of
    successes) that is 1.1 to 1.2 s, against 0.3 ms on the index (docs/TELEMETRY.md, "A month of
    logs"). Incremental sorts off for the transaction leave the dedicated index the cheap plan; not
    for other reads, which need them (the unfiltered list, a date range).
    """
    with planner_off("enable_incremental_sort"):
        yield


@contextmanager
def planner_off(setting: str) -> Iterator[None]:
    """One PostgreSQL planner method (``enable_...``) off for the reads of the log inside, in their
    own transaction (``SET LOCAL``); nothing elsewhere. Other databases: no change."""
    connection = connections[router.db_for_read(InferenceLog)]
    if connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL {setting} = off")
        yield


# A page's position: ``<created_at in µs since the epoch>.<id>`` of the last row it showed.
LOG_CURSOR_PATTERN = r"^[0-9]{1,17}\.[0-9]{1,18}$"  # a datetime before year 5000, a bigint
_MICROSECOND = timedelta(microseconds=1)


def log_cursor(row: InferenceLog) -> str:
    return f"{(row.created_at - EPOCH) // _MICROSECOND}.{row.pk}"


def parse_log_cursor(cursor: str) -> tuple[datetime, int]:
    """A cursor made by :func:`log_cursor` (its form is checked by ``LOG_CURSOR_PATTERN``)."""
    micros, pk = cursor.split(".")
    return EPOCH + timedelta(microseconds=int(micros)), int(pk)


def inference_log_page(
    program: str,
    limit: int = 50,
    before: str | None = None,
    api_key_id: int | None = None,
    version: str | None = None,
) -> LogPage:
    """A program's records newest first, ``limit`` at a time: keyset pagination, never an OFFSET.

    ``before`` (the previous page's ``next``) starts the page right after that page's last row:
    one range scan of the (program, created_at, id) index however deep the page, where an OFFSET
    would walk every newer row. Rows written meanwhile neither shift nor repeat a page.
    ``api_key_id``: that key's calls only (a key without the ``admin`` scope reads nothing else;
    the (api_key_id, program, created_at, id) index gives them in order); None: every caller's.
    """
    rows = InferenceLog.objects.filter(program=program)
    if api_key_id is not None:
        rows = rows.filter(api_key_id=api_key_id)
    if version is not None:  # the (program, version, created_at, id) index
        rows = rows.filter(version=version)
    if before is not None:
        created, pk = parse_log_cursor(before)
        rows = rows.filter(created_at__lte=created).filter(Q(created_at__lt=created) | Q(pk__lt=pk))
    with newest_rows_plan():
        page = list(rows.order_by(*NEWEST_FIRST)[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return LogPage([inference_log_entry(row) for row in page], log_cursor(page[-1]) if more else None)


def inference_log_for_request(request_id: str, api_key_id: int | None = None) -> InferenceLog | None:
    """The newest record of a request id (a client may reuse its ``X-Request-ID``), on the request
    id index; ``api_key_id``: only if that key made the call (None: whoever did)."""
    rows = InferenceLog.objects.filter(request_id=request_id)
    if api_key_id is not None:
        rows = rows.filter(api_key_id=api_key_id)
    return rows.order_by(*NEWEST_FIRST).first()


def inference_logs_for_requests(request_ids: Sequence[str]) -> dict[str, InferenceLog]:
    """The newest record of each request id (one query on the request id index)."""
    rows = InferenceLog.objects.filter(request_id__in=list(request_ids)).order_by("created_at", "id")
    return {row.request_id: row for row in rows}  # the newest wins


def inference_log_entry(row: InferenceLog) -> dict[str, Any]:
    """dspy-cli's log entry fields, plus the request id, status and error type."""
    return {
        "timestamp": row.created_at.isoformat(),
        "program": row.program,
        "model": row.model,
        "model_alias": row.model_alias,
        "request_id": row.request_id,
        "trace_id": row.trace_id,
        "status_code": row.status_code,
        "success": row.success,
        "duration_ms": row.duration_ms,
        "inputs": row.inputs,
        "outputs": row.outputs,
        "error": row.error_message or None,
        "error_type": row.error_type or None,
        "tokens": {
            "prompt_tokens": row.prompt_tokens,
            "completion_tokens": row.completion_tokens,
            "total_tokens": row.total_tokens,
        },
        "cost_usd": row.cost_usd,
        "lm_calls": row.lm_calls,
        "answered_by": row.answered_by or None,
        "attempts": row.attempts,
        "worker": row.worker,
        "api_key": row.api_key_name or None,
        "version": row.version or None,
        "shadow": row.shadow,
    }


# -- admin dashboard -----------------------------------------------------------------------------

# window -> (bucket length, span)
WINDOWS: dict[str, tuple[int, int]] = {
    "hour": (MINUTE, 3600),
    "day": (TEN_MINUTES, 86400),
    "week": (HOUR, 7 * 86400),
}
MAX_CHART_PROGRAMS = 8


@dataclass
class Series:
    calls: list[int]
    errors: list[int]
    p95_ms: list[float | None]


@dataclass
class Dashboard:
    window: str
    period_s: int
    programs: list[ProgramCounters]  # all-time totals, the table
    times: list[datetime]  # bucket starts of the window, oldest first
    series: dict[str, Series] = field(default_factory=dict)  # per program, busiest first
    tokens_by_model: list[tuple[str, int, int]] = field(default_factory=list)  # (model, prompt, completion)


def dashboard(window: str = "hour", now: datetime | None = None) -> Dashboard:
    """Everything the admin dashboard shows: four queries on the aggregates' unique indexes."""
    period_s, span_s = WINDOWS.get(window, WINDOWS["hour"])
    now = now or datetime.now(tz=UTC)
    seconds = int(now.timestamp())
    last = datetime.fromtimestamp(seconds - seconds % period_s, tz=UTC)
    times = [last - timedelta(seconds=period_s * i) for i in reversed(range(span_s // period_s))]
    board = Dashboard(window if window in WINDOWS else "hour", period_s, [], times)
    board.programs = sort_counters(list(program_stats_totals().values()), "calls", "desc")
    board.series = _series(period_s, times)
    board.tokens_by_model = _tokens_by_model(period_s, times[0])
    return board


def _series(period_s: int, times: list[datetime]) -> dict[str, Series]:
    slot = {start: index for index, start in enumerate(times)}
    rows = ProgramStats.objects.filter(period_s=period_s, period_start__gte=times[0])
    series: dict[str, Series] = {}
    for row in rows:
        index = slot.get(row.period_start)
        if index is None:
            continue
        entry = series.get(row.program)
        if entry is None:
            size = len(times)
            entry = series[row.program] = Series([0] * size, [0] * size, [None] * size)
        entry.calls[index] += row.call_count
        entry.errors[index] += row.error_count
        entry.p95_ms[index] = sketch_from_row(row).percentile(0.95)
    busiest = sorted(series.items(), key=lambda item: -sum(item[1].calls))
    return dict(busiest[:MAX_CHART_PROGRAMS])


def _tokens_by_model(period_s: int, since: datetime) -> list[tuple[str, int, int]]:
    totals: dict[str, list[int]] = {}
    for row in ModelStats.objects.filter(period_s=period_s, period_start__gte=since):
        entry = totals.setdefault(row.model, [0, 0])
        entry[0] += row.prompt_tokens
        entry[1] += row.completion_tokens
    ranked = sorted(totals.items(), key=lambda item: -sum(item[1]))
    return [(model, prompt, completion) for model, (prompt, completion) in ranked]


@dataclass
class Spend:
    """Requests, tokens and estimated cost of one API key over a period."""

    request_count: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, row: Any) -> None:
        self.request_count += row.request_count
        self.prompt_tokens += row.prompt_tokens
        self.completion_tokens += row.completion_tokens
        self.cost_usd += row.cost_usd

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_count": self.request_count,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cost_usd": round(self.cost_usd, 6),
        }


def key_spend(
    key_ids: Iterable[int] | None = None, today: date | None = None
) -> dict[int, tuple[Spend, Spend]]:
    """(today, this month) per API key, UTC, from the per-key daily aggregates (one indexed query)."""
    today = today or datetime.now(tz=UTC).date()
    rows = KeyDailyStats.objects.filter(day__gte=today.replace(day=1), day__lte=today)
    if key_ids is not None:
        rows = rows.filter(api_key_id__in=list(key_ids))
    spend: dict[int, tuple[Spend, Spend]] = {}
    for row in rows:
        day_spend, month_spend = spend.setdefault(row.api_key_id, (Spend(), Spend()))
        month_spend.add(row)
        if row.day == today:
            day_spend.add(row)
    return spend


def key_spend_list(api_key_id: int | None = None) -> list[dict[str, Any]]:
    """Every key with use this month: its id, name, and spend today and this month (two queries).

    ``api_key_id``: that key's entry only (what a key without the ``admin`` scope may see).
    """
    from apikeys.models import ApiKey

    spend = key_spend(None if api_key_id is None else [api_key_id])
    names = dict(ApiKey.objects.filter(id__in=list(spend)).values_list("id", "name"))
    return [
        {
            "api_key_id": key_id,
            "name": names.get(key_id, ""),
            "today": day.as_dict(),
            "month": month.as_dict(),
        }
        for key_id, (day, month) in sorted(spend.items())
    ]


# -- per-version numbers ---------------------------------------------------------------------------


def version_stats_list(program: str) -> list[tuple[str, ProgramCounters, int]]:
    """``(version, its totals, its shadow runs)`` for every version of ``program`` that was called,
    oldest version first: its all-time rows (one per version, kept by the writer), never its calls."""
    rows = sorted(VersionStats.objects.filter(program=program), key=lambda row: _version_number(row.version))
    return [(row.version, counters_from_row(row), row.shadow_count) for row in rows]


def _version_number(label: str) -> int:
    return int(label[1:]) if label[1:].isdigit() else 0
