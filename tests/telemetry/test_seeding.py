"""A month of logs, small: the seeder's rows and aggregates agree, and the log's read paths
(admin counts and pages, keyset pages, the failure indexes) and pruning in chunks stay exact.

The same code runs on 10 million rows in ``loadtest/logs_at_scale.py`` (its numbers are in
docs/TELEMETRY.md); here only what must hold at any size is checked, on SQLite and PostgreSQL.
"""

import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.contrib.admin.sites import site
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.db.models import Count, Q, Sum
from django.test import RequestFactory

from telemetry import selectors, storage
from telemetry.admin import LogPaginator
from telemetry.inserts import insert_rows
from telemetry.models import EPOCH, HOUR, MINUTE, TEN_MINUTES, TOTAL, InferenceLog, ModelStats, ProgramStats
from telemetry.seeding import Seeder
from tests.telemetry.factories import make_record

pytestmark = pytest.mark.django_db
PROGRAMS = ["Alpha", "Beta", "Gamma"]


def _seed(rows: int, days: float, now: datetime | None = None) -> None:
    Seeder(PROGRAMS, rows, days, now or datetime.now(tz=UTC)).run()


def test_the_command_seeds_rows_and_aggregates_that_agree() -> None:
    # A history the writer already wrote (its totals and current buckets exist): the seed adds to it.
    storage.inference_logs_write([make_record("Alpha", finished_at=time.time() - 120, request_id="live")])
    out = StringIO()
    call_command("seed_inference_logs", rows=20_000, days=0.25, programs=PROGRAMS, stdout=out)
    assert "Seeded 20,000 inference log row(s)" in out.getvalue()
    assert InferenceLog.objects.count() == 20_001
    rows = InferenceLog.objects.values("program").annotate(
        calls=Count("id"), ok=Count("id", filter=Q(success=True)),
        timed=Count("id", filter=Q(duration_ms__isnull=False)),
        prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"), tokens=Sum("total_tokens"),
        latency=Sum("duration_ms"),
    )  # fmt: skip
    totals = selectors.program_stats_totals()
    assert sorted(totals) == PROGRAMS
    for row in rows:
        counters = totals[row["program"]]
        assert (counters.call_count, counters.success_count, counters.error_count) == (
            row["calls"], row["ok"], row["calls"] - row["ok"],
        )  # fmt: skip
        assert (counters.prompt_tokens, counters.completion_tokens, counters.total_tokens) == (
            row["prompt"], row["completion"], row["tokens"],
        )  # fmt: skip
        assert counters.latency.count == row["timed"]
        assert counters.latency.total_ms == pytest.approx(row["latency"])
    # Several outcomes, doors and models, as a real month has.
    assert len(set(InferenceLog.objects.values_list("status_code", flat=True))) >= 5
    assert len(set(InferenceLog.objects.values_list("source", flat=True))) >= 4
    assert InferenceLog.objects.filter(
        duration_ms__isnull=True, success=False
    ).exists()  # refused: no latency
    _assert_models_match_the_lm_calls()
    _assert_buckets_add_up_to_the_totals()


def _assert_models_match_the_lm_calls() -> None:
    calls: Counter[tuple[str, str]] = Counter()
    tokens: Counter[tuple[str, str]] = Counter()
    for program, lm_calls in InferenceLog.objects.values_list("program", "lm_calls"):
        for call in lm_calls if isinstance(lm_calls, list) else json.loads(lm_calls):
            calls[program, call["model"]] += 1
            tokens[program, call["model"]] += call["prompt_tokens"]
    stored = ModelStats.objects.filter(period_s=TOTAL)
    assert {(m.program, m.model): m.call_count for m in stored} == dict(calls)
    assert {(m.program, m.model): m.prompt_tokens for m in stored} == dict(tokens)


def _assert_buckets_add_up_to_the_totals() -> None:
    totals = {row.program: row.call_count for row in ProgramStats.objects.filter(period_s=TOTAL)}
    for period_s in (HOUR, TEN_MINUTES, MINUTE):  # 6 hours: every bucket is within its retention
        sums = ProgramStats.objects.filter(period_s=period_s).values("program").annotate(n=Sum("call_count"))
        assert {row["program"]: row["n"] for row in sums} == totals, period_s
    first_minute = ProgramStats.objects.filter(period_s=MINUTE).order_by("period_start").first()
    assert first_minute is not None and first_minute.period_start != EPOCH


def test_minute_buckets_are_kept_only_within_their_retention() -> None:
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    _seed(600, days=9, now=now)
    for period_s, keep in ((MINUTE, timedelta(days=2)), (TEN_MINUTES, timedelta(days=8))):
        buckets = ProgramStats.objects.filter(period_s=period_s)
        assert buckets.earliest("period_start").period_start >= now - keep
        in_window = InferenceLog.objects.filter(created_at__gte=now - keep).count()
        assert buckets.aggregate(n=Sum("call_count"))["n"] == in_window > 0
    hourly = ProgramStats.objects.filter(period_s=HOUR).aggregate(n=Sum("call_count"))["n"]
    assert hourly == InferenceLog.objects.count() == 600
    board = selectors.dashboard("day", now=now)
    in_window = InferenceLog.objects.filter(created_at__gte=board.times[0]).count()
    assert sum(sum(series.calls) for series in board.series.values()) == in_window > 0


def _changelist(query: str) -> object:
    request = RequestFactory().get(f"/admin/telemetry/inferencelog/{query}")
    request.user = User.objects.get(username="root")
    response = site._registry[InferenceLog].changelist_view(request)
    if hasattr(response, "render"):
        response.render()
    return response


def test_the_admin_list_counts_without_scanning_and_pages_no_deeper_than_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    User.objects.create_superuser("root", "root@example.com", "pw")
    monkeypatch.setattr(LogPaginator, "CAP", 100)
    _seed(2_000, days=0.1)
    failures = InferenceLog.objects.filter(success=False).count()
    assert 0 < failures < 2_000
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE telemetry_inferencelog")
    unfiltered = _changelist("")
    assert unfiltered.status_code == 200
    paginator = unfiltered.context_data["cl"].paginator
    # PostgreSQL: the planner's estimate (exact right after ANALYZE of a small table); else capped.
    assert paginator.count == (2_000 if connection.vendor == "postgresql" else 101)
    assert paginator.num_pages == 3  # 101 rows of 50 a page, whatever the count says
    assert _changelist("?p=3").status_code == 200
    assert _changelist("?p=4").status_code == 302  # past the cap: the admin's "?e=1" redirect
    failed = _changelist("?success__exact=0").context_data["cl"]
    assert failed.paginator.count == min(failures, 101)
    assert all(not row.success for row in failed.result_list) and len(failed.result_list) == 50
    program = _changelist("?program=Beta&success__exact=0").context_data["cl"]
    assert {row.program for row in program.result_list} == {"Beta"}
    assert program.paginator.count == min(
        InferenceLog.objects.filter(program="Beta", success=False).count(), 101
    )


def test_the_failure_filters_read_the_partial_indexes() -> None:
    _seed(2_000, days=0.1)
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL's planner picks by statistics; the 10-million-row run measures it")
    failed = InferenceLog.objects.filter(success=False).order_by("-created_at", "-id")[:50]
    assert "telemetry_log_failed" in failed.explain()
    in_program = InferenceLog.objects.filter(program="Beta", success=False).order_by("-created_at", "-id")[
        :50
    ]
    assert "telemetry_log_program_failed" in in_program.explain()


def _rows(created: list[datetime], program: str = "P", prefix: str = "r", success: bool = True) -> None:
    insert_rows(InferenceLog, [
        {"program": program, "request_id": f"{prefix}{i}", "success": success,
         "status_code": 200 if success else 502, "created_at": at}
        for i, at in enumerate(created)
    ])  # fmt: skip


def test_log_pages_follow_each_other_without_a_gap_or_a_repeat_even_on_equal_times() -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    # Groups of rows with the very same created_at (one batch of the writer), across page edges.
    _rows([base + timedelta(seconds=i // 4) for i in range(53)])
    _rows([base + timedelta(seconds=2)] * 3, program="Other", prefix="o")
    expected = list(
        InferenceLog.objects.filter(program="P")
        .order_by("-created_at", "-id")
        .values_list("request_id", flat=True)
    )
    seen, cursor, pages = [], None, 0
    while True:
        page = selectors.inference_log_page("P", limit=7, before=cursor)
        seen += [entry["request_id"] for entry in page.logs]
        pages += 1
        if pages == 2:  # a row written meanwhile does not shift the pages that follow
            _rows([base + timedelta(days=1)], prefix="late")
        if page.next is None:
            break
        cursor = page.next
    assert seen == expected and pages == 8
    assert selectors.inference_log_page("P", limit=53).next is not None  # the late row makes 54
    assert selectors.inference_log_page("P", limit=54).next is None


def test_pruning_in_chunks_removes_exactly_the_rows_older_than_the_age() -> None:
    now = datetime(2026, 2, 1, tzinfo=UTC)
    cutoff = now - timedelta(days=30)
    old = [cutoff - timedelta(seconds=(i + 2) // 3) for i in range(1, 26)]  # ties in a chunk and across
    young = [cutoff, cutoff + timedelta(microseconds=1), now]  # exactly at the age: kept
    _rows(old, prefix="old")
    _rows(young, prefix="young")
    deleted = storage.inference_logs_prune(timedelta(days=30), now=now, chunk=4)
    assert deleted["logs"] == 25 and deleted["chunks"] == 7
    assert sorted(InferenceLog.objects.values_list("request_id", flat=True)) == ["young0", "young1", "young2"]


def test_newest_rows_of_a_program_or_of_failures_are_read_on_their_index_behind_a_burst() -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    _rows([base + timedelta(seconds=i) for i in range(200)], program="Rare", prefix="rare")
    _rows([base - timedelta(seconds=i) for i in range(1, 80)], program="Rare", prefix="failed", success=False)
    _rows([base + timedelta(hours=1, milliseconds=i) for i in range(5000)], program="Busy", prefix="busy")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE telemetry_inferencelog")
    newest = InferenceLog.objects.filter(program="Rare").order_by("-created_at", "-id")[:51]
    failed = InferenceLog.objects.filter(success=False).order_by("-created_at", "-id")[:51]
    with selectors.newest_rows_plan():
        plan, failed_plan = newest.explain(), failed.explain()
        page = selectors.inference_log_page("Rare", limit=50)
    assert "telemetry_log_program_recent" in plan, plan
    assert "telemetry_log_failed" in failed_plan, failed_plan
    assert [entry["request_id"] for entry in page.logs] == [f"rare{i}" for i in range(199, 149, -1)]
