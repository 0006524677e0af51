"""Reads: dspy-cli shapes, sorting, the dashboard, and a cost that does not grow with the log."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.admin.sites import site
from django.contrib.auth.models import User
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext

from telemetry import selectors, storage
from telemetry.models import InferenceLog, ProgramStats
from tests.telemetry.factories import make_record

pytestmark = pytest.mark.django_db


def test_metrics_list_has_every_served_program_with_zeros_and_sorts() -> None:
    storage.inference_logs_write([make_record("B", prompt=100, completion=0, cost=2.0, duration_ms=900)])
    storage.inference_logs_write([make_record("A", prompt=1, completion=1, cost=0.5, duration_ms=10)] * 3)
    names = ["A", "B", "Never"]
    by_calls = [c.program for c in selectors.program_stats_list(names, "calls", "desc")]
    assert by_calls == ["A", "B", "Never"]
    assert [c.program for c in selectors.program_stats_list(names, "name", "asc")] == ["A", "B", "Never"]
    assert selectors.program_stats_list(names, "cost", "desc")[0].program == "B"
    assert selectors.program_stats_list(names, "latency", "desc")[0].program == "B"
    assert selectors.program_stats_list(names, "tokens", "asc")[0].program == "Never"
    assert [c.program for c in selectors.program_stats_list(names, "last_call", "desc")][-1] == "Never"
    never = selectors.program_stats_get("Never").as_dict()
    assert never["call_count"] == 0 and never["total_cost_usd"] == 0.0


def test_log_list_is_newest_first_in_dspy_cli_shape() -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    storage.inference_logs_write(
        [make_record(request_id=f"r{i}", finished_at=base + i, prompt=i + 1) for i in range(5)]
    )
    logs = selectors.inference_log_list("P", limit=3)
    assert [entry["request_id"] for entry in logs] == ["r4", "r3", "r2"]
    entry = logs[0]
    assert entry["tokens"] == {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
    assert entry["success"] is True and entry["inputs"] == {"question": "q"}
    assert entry["lm_calls"][0]["model"] == "openai/m"
    assert {"timestamp", "program", "model", "duration_ms", "outputs", "cost_usd", "error"} <= entry.keys()


def test_dashboard_series_buckets_calls_errors_and_p95() -> None:
    now = datetime(2026, 5, 1, 12, 30, 30, tzinfo=UTC)
    two_minutes_ago = (now - timedelta(minutes=2)).timestamp()
    storage.inference_logs_write(
        [make_record(finished_at=two_minutes_ago, duration_ms=100) for _ in range(19)]
        + [make_record(finished_at=two_minutes_ago, status=500, duration_ms=3000)]
    )
    board = selectors.dashboard("hour", now=now)
    assert len(board.times) == 60 and board.times[-1] == datetime(2026, 5, 1, 12, 30, tzinfo=UTC)
    series = board.series["P"]
    assert series.calls[-3] == 20 and series.errors[-3] == 1
    assert sum(series.calls) == 20
    assert series.p95_ms[-3] is not None and 75 <= series.p95_ms[-3] <= 3000
    assert series.p95_ms[-1] is None  # no requests: no point, not zero
    assert board.tokens_by_model == [("openai/m", 200, 100)]
    assert selectors.dashboard("week", now=now).period_s == 3600


def _seed(count: int, start: int = 0) -> None:
    """``count`` log rows for five programs (straight rows: the aggregates do not depend on them)."""
    created = datetime(2026, 1, 1, tzinfo=UTC)
    fields = {"success": True, "status_code": 200, "duration_ms": 10.0}
    rows = [
        InferenceLog(
            program=f"P{i % 5}",
            request_id=f"seed-{i}",
            created_at=created + timedelta(seconds=i),
            inputs={"q": i},
            **fields,
        )
        for i in range(start, start + count)
    ]
    InferenceLog.objects.bulk_create(rows, batch_size=5000)


def _read_everything() -> CaptureQueriesContext:
    superuser = User.objects.get(username="root")
    factory = RequestFactory()
    with CaptureQueriesContext(connection) as queries:
        selectors.program_stats_list([f"P{i}" for i in range(5)], "calls", "desc")
        selectors.inference_log_list("P3", 50)
        selectors.dashboard("week")
        pages = [
            (ProgramStats, "/admin/telemetry/programstats/"),
            (InferenceLog, "/admin/telemetry/inferencelog/?program=P3"),
        ]
        for model, path in pages:
            request = factory.get(path)
            request.user = superuser
            response = site._registry[model].changelist_view(request)
            response.render()
            assert response.status_code == 200
    return queries


def _log_table_reads(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if "telemetry_inferencelog" in q["sql"]]


def test_reads_cost_the_same_with_100_or_100_000_log_rows() -> None:
    User.objects.create_superuser("root", "root@example.com", "pw")
    storage.inference_logs_write([make_record(f"P{i}") for i in range(5)])
    _seed(100)
    small = _read_everything()
    _seed(99_900, start=100)
    large = _read_everything()

    assert len(small.captured_queries) == len(large.captured_queries)
    # The metrics and the dashboard never touch the log table; its own admin list reads one page,
    # and counts at most a capped number of rows (never an exact COUNT(*) of the whole table).
    log_reads = _log_table_reads(large)
    # The version filter's choices: one MIN probe of the (program, version) index per version, and
    # one that finds none above the last (the rows here have no version): never a DISTINCT.
    probes = [sql for sql in log_reads if "MIN(" in sql.upper()]
    assert len(probes) == 1 and all("DISTINCT" not in sql.upper() for sql in log_reads), log_reads
    page_reads = [sql for sql in log_reads if sql not in probes]
    assert len(page_reads) == 3  # the API's newest 50, the admin page of 50, the capped count
    assert all("LIMIT" in sql.upper() for sql in page_reads), page_reads


def test_recent_logs_of_a_program_are_read_through_the_index() -> None:
    _seed(5000)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ANALYZE telemetry_inferencelog")
    plan = InferenceLog.objects.filter(program="P3").order_by("-created_at", "-id")[:50].explain()
    if connection.vendor == "postgresql":  # the planner may pick either index; never a table scan
        assert "Index Scan" in plan and "Seq Scan" not in plan, plan
    else:
        assert "USING INDEX telemetry_log_program_recent" in plan, plan
        assert "TEMP B-TREE" not in plan, plan  # ordered by the index, no sort of the matches
