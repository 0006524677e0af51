"""Writing batches: rows and aggregates together, F() increments, retention, counters rebuild."""

from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from django.core.management import call_command
from django.db import OperationalError

from telemetry import counters, lifecycle, services, storage
from telemetry.counters import ProcessCounters
from telemetry.models import EPOCH, HOUR, MINUTE, TEN_MINUTES, TOTAL, InferenceLog, ModelStats, ProgramStats
from telemetry.records import Body, to_log_values
from telemetry.selectors import program_stats_totals, sketch_from_row
from tests.telemetry.factories import make_record

pytestmark = pytest.mark.django_db


def test_a_batch_becomes_rows_and_all_time_and_bucket_aggregates() -> None:
    now = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC).timestamp()
    records = [
        make_record(request_id="a", prompt=10, completion=5, cost=0.25, duration_ms=120, finished_at=now),
        make_record(
            request_id="b", status=502, prompt=3, completion=0, cost=None, duration_ms=40, finished_at=now + 1
        ),
        make_record(
            request_id="c", status=422, prompt=0, completion=0, duration_ms=None, finished_at=now + 2
        ),
    ]
    storage.inference_logs_write(records)

    rows = {row.request_id: row for row in InferenceLog.objects.all()}
    assert set(rows) == {"a", "b", "c"}
    assert (rows["a"].prompt_tokens, rows["a"].completion_tokens, rows["a"].total_tokens) == (10, 5, 15)
    assert rows["a"].inputs == {"question": "q"} and rows["a"].outputs == {"answer": "a"}
    assert rows["b"].success is False and rows["b"].cost_usd is None and rows["b"].error_message == "it broke"
    assert rows["c"].duration_ms is None

    for period in (TOTAL, MINUTE, TEN_MINUTES, HOUR):
        stats = ProgramStats.objects.get(program="P", period_s=period)
        assert (stats.call_count, stats.success_count, stats.error_count) == (3, 1, 2), period
        assert (stats.prompt_tokens, stats.completion_tokens, stats.total_tokens) == (13, 5, 18)
        assert stats.cost_usd == pytest.approx(0.25)
        assert stats.duration_ms_sum == pytest.approx(160)
        sketch = sketch_from_row(stats)
        assert sketch.count == 2  # the 422 was not timed
        assert sketch.percentile(0) == pytest.approx(40, rel=0.005)
        assert sketch.percentile(1) == pytest.approx(120, rel=0.005)
        assert stats.last_call_at == datetime.fromtimestamp(now + 2, tz=UTC)
    assert ProgramStats.objects.get(period_s=TOTAL).period_start == EPOCH
    assert ProgramStats.objects.get(period_s=HOUR).period_start == datetime(2026, 3, 4, 5, tzinfo=UTC)
    model = ModelStats.objects.get(period_s=TOTAL)
    assert (model.model, model.call_count, model.prompt_tokens, model.cost_usd) == ("openai/m", 2, 13, 0.25)


def test_batches_add_up_with_increments_and_keep_the_latest_call() -> None:
    """Two writers (two workers) writing the same program: totals add, last call is the newest."""
    storage.inference_logs_write([make_record(request_id="new", finished_at=2_000_000_000.0)])
    storage.inference_logs_write([make_record(request_id="old", finished_at=1_000_000_000.0)])
    total = ProgramStats.objects.get(period_s=TOTAL)
    assert total.call_count == 2
    assert total.total_tokens == 30
    assert total.last_call_at == datetime.fromtimestamp(2_000_000_000, tz=UTC)


def test_a_failed_batch_leaves_nothing_behind_so_its_retry_counts_once() -> None:
    with (
        mock.patch.object(storage, "add_program_stats", side_effect=OperationalError("gone")),
        pytest.raises(OperationalError),
    ):
        storage.inference_logs_write([make_record(request_id="x")])
    assert InferenceLog.objects.count() == 0
    storage.inference_logs_write([make_record(request_id="x")])  # the writer's retry
    assert InferenceLog.objects.count() == 1
    assert ProgramStats.objects.get(period_s=TOTAL).call_count == 1


def test_counters_rebuild_from_the_database_totals() -> None:
    storage.inference_logs_write([make_record(request_id=str(i), prompt=i, completion=1) for i in range(5)])
    counters = ProcessCounters()
    with mock.patch.object(lifecycle, "PROCESS_COUNTERS", counters):
        assert lifecycle.program_counters_rebuild()
    rebuilt = counters.get("P").as_dict()
    assert rebuilt["call_count"] == 5
    assert rebuilt["total_prompt_tokens"] == 0 + 1 + 2 + 3 + 4
    assert rebuilt["lm_call_breakdown"]["openai/m"]["call_count"] == 5
    assert rebuilt["p95_latency_ms"] is not None


def test_prune_deletes_old_rows_and_expired_minute_buckets_but_keeps_totals() -> None:
    now = datetime.now(tz=UTC)
    old, recent = (now - timedelta(days=40)).timestamp(), (now - timedelta(days=1)).timestamp()
    storage.inference_logs_write([make_record(request_id=f"old{i}", finished_at=old) for i in range(3)])
    storage.inference_logs_write([make_record(request_id="recent", finished_at=recent)])
    call_command("prune_inference_logs", "--older-than", "30d")
    assert list(InferenceLog.objects.values_list("request_id", flat=True)) == ["recent"]
    assert ProgramStats.objects.get(period_s=TOTAL).call_count == 4
    assert not ProgramStats.objects.filter(period_s=MINUTE, period_start__lt=now - timedelta(days=2)).exists()
    assert ProgramStats.objects.filter(period_s=HOUR).count() == 2  # hourly history is kept


def test_prune_rejects_an_age_without_unit() -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="30d"):
        call_command("prune_inference_logs", "--older-than", "30")


def test_totals_selector_reads_what_was_written() -> None:
    storage.inference_logs_write([make_record(program="A"), make_record(program="B", status=500)])
    totals = program_stats_totals()
    assert totals["A"].success_count == 1 and totals["B"].error_count == 1


def test_rows_survive_unusual_bodies() -> None:
    huge = make_record(request_id="huge")
    huge.inputs = Body(None, 5_000_000)  # over the capture limit: only the size was kept
    text = make_record(request_id="text", inputs=b"{not json")
    nan = make_record(request_id="nan", outputs=b'{"score": NaN}')
    deep = make_record(request_id="deep", inputs=b"[" * 900 + b"]" * 900)  # parsed, too deep to store
    surrogate = make_record(request_id="surrogate", inputs=b'{"q\\udc00": "a\\ud800b"}')
    storage.inference_logs_write([huge, text, nan, deep, surrogate])
    rows = {row.request_id: row for row in InferenceLog.objects.all()}
    assert rows["huge"].inputs == {"_truncated": True, "bytes": 5_000_000}
    assert rows["text"].inputs == {"_unparsed": "{not json"}
    assert rows["nan"].outputs == {"score": "nan"}
    assert rows["deep"].inputs == {"_unparsed": "[" * 900 + "]" * 900}
    assert rows["surrogate"].inputs == {"q\\udc00": "a\\ud800b"}  # lone surrogates as their escapes
    assert to_log_values(make_record(inputs=None))["inputs"] is None  # capture off


@pytest.mark.django_db(transaction=True)
def test_enqueued_records_reach_the_database_through_the_writer_thread() -> None:
    """The request-path service, the real thread and its own connection, an explicit flush."""
    live_before = counters.PROCESS_COUNTERS.get("P").call_count
    writer = lifecycle.telemetry_writer()
    writer.start()
    try:
        for i in range(30):
            assert services.inference_log_enqueue(make_record(request_id=f"t{i}"))
        assert counters.PROCESS_COUNTERS.get("P").call_count == live_before + 30  # counted at once
        assert lifecycle.telemetry_flush(timeout_s=30)
        assert InferenceLog.objects.count() == 30
        assert ProgramStats.objects.get(period_s=TOTAL).call_count == 30
        assert writer.dropped == 0 and writer.depth == 0
    finally:
        lifecycle.telemetry_writer_reset()


def test_a_versions_numbers_are_its_aggregate_row_not_a_scan_of_its_calls() -> None:
    """``/api/metrics/{P}``'s per-version entries read one row per version that the writer adds to
    with the log rows (a scan of the calls took 4 to 8 s at 10M rows); shadow runs counted apart."""
    from dataclasses import replace

    from telemetry.selectors import version_stats_list

    def versioned(version: str, status: int = 200, shadow: bool = False, cost: float = 0.001) -> object:
        return replace(make_record("P", status=status, cost=cost), version=version, shadow=shadow)

    storage.inference_logs_write([versioned("v1"), versioned("v1", status=502), versioned("v2", shadow=True)])
    storage.inference_logs_write([versioned("v2", cost=0.002), make_record("P")])  # the last: unversioned
    InferenceLog.objects.all().delete()  # the numbers must not come from the calls

    stats = {version: (counters, shadows) for version, counters, shadows in version_stats_list("P")}
    assert list(stats) == ["v1", "v2"]  # oldest first; the unversioned call is in no version
    v1, v1_shadows = stats["v1"]
    assert (v1.call_count, v1.success_count, v1.error_count, v1_shadows) == (2, 1, 1, 0)
    v2, v2_shadows = stats["v2"]
    assert (v2.call_count, v2_shadows, v2.total_tokens) == (2, 1, 30)
    assert v2.cost_usd == pytest.approx(0.003)
    assert v2.latency.count == 2
