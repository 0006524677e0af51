"""Counters and the fixed-bucket latency histogram."""

import itertools
import sys

import pytest

from telemetry.counters import (
    BUCKET_COUNT,
    LATENCY_BOUNDS_MS,
    LatencyHistogram,
    ProcessCounters,
    ProgramCounters,
    bucket_index,
    merge,
)


def test_bucket_bounds_are_inclusive_upper_limits() -> None:
    assert bucket_index(0) == 0
    assert bucket_index(5) == 0  # le=5
    assert bucket_index(5.01) == 1
    assert bucket_index(LATENCY_BOUNDS_MS[-1]) == len(LATENCY_BOUNDS_MS) - 1
    assert bucket_index(10**9) == BUCKET_COUNT - 1  # the open last bucket


def test_bounds_grow_by_at_most_one_and_a_half_past_the_first_buckets() -> None:
    ratios = [b / a for a, b in itertools.pairwise(LATENCY_BOUNDS_MS[3:])]
    assert max(ratios) <= 1.5


def test_percentiles_are_within_one_bucket_of_the_truth() -> None:
    histogram = LatencyHistogram()
    durations = [40 + i * 0.5 for i in range(1000)]  # 40 .. 539.5 ms, uniform
    for duration in durations:
        histogram.observe(duration)
    exact = sorted(durations)
    for q in (0.5, 0.95, 0.99):
        truth = exact[int(q * len(exact)) - 1]
        estimate = histogram.percentile(q)
        assert estimate is not None
        index = bucket_index(truth)
        lower = LATENCY_BOUNDS_MS[index - 1] if index else 0
        assert lower <= estimate <= LATENCY_BOUNDS_MS[index], (q, truth, estimate)
    assert histogram.mean() == pytest.approx(sum(durations) / len(durations))


def test_histogram_memory_does_not_grow_with_observations() -> None:
    histogram = LatencyHistogram()
    histogram.observe(1.0)
    before = sys.getsizeof(histogram.counts)
    for i in range(100_000):
        histogram.observe(float(i % 400_000))
    assert sys.getsizeof(histogram.counts) == before
    assert histogram.count == 100_001


def test_empty_histogram_has_no_percentile_and_slow_tail_reports_the_last_bound() -> None:
    histogram = LatencyHistogram()
    assert histogram.percentile(0.95) is None
    assert histogram.mean() is None
    histogram.observe(1_000_000)
    assert histogram.percentile(0.99) == LATENCY_BOUNDS_MS[-1]


def test_zero_values_are_numbers_not_null() -> None:
    body = ProgramCounters("P").as_dict()
    for key in ("call_count", "success_count", "error_count", "total_tokens", "total_prompt_tokens",
                "total_completion_tokens", "total_cost_usd"):  # fmt: skip
        assert body[key] == 0, key
    assert body["lm_call_breakdown"] == {}
    assert body["last_call_ts"] is None  # never called: there is no timestamp


def test_record_counts_outcomes_tokens_cost_and_models() -> None:
    counters = ProgramCounters("P")
    call = {"model": "m", "prompt_tokens": 3, "completion_tokens": 4, "cost_usd": 0.5}
    counters.record(success=True, duration_ms=20, finished_at=100.0, prompt_tokens=3, completion_tokens=4,
                    cost_usd=0.5, lm_calls=[call])  # fmt: skip
    counters.record(success=False, duration_ms=None, finished_at=50.0, prompt_tokens=0, completion_tokens=0,
                    cost_usd=0.0)  # fmt: skip
    body = counters.as_dict()
    assert (body["call_count"], body["success_count"], body["error_count"]) == (2, 1, 1)
    assert (body["total_prompt_tokens"], body["total_completion_tokens"], body["total_tokens"]) == (3, 4, 7)
    assert body["total_cost_usd"] == 0.5
    assert body["avg_latency_ms"] == 20  # the unmeasured (refused) request is not a 0 ms sample
    assert body["last_call_ts"].startswith("1970-01-01T00:01:40")
    assert body["lm_call_breakdown"]["m"]["call_count"] == 1


def test_baseline_from_the_database_adds_to_what_was_counted_before() -> None:
    live = ProcessCounters()
    live.get("P").record(success=True, duration_ms=10, finished_at=2.0, prompt_tokens=1, completion_tokens=1,
                         cost_usd=0.0)  # fmt: skip
    stored = ProgramCounters("P", call_count=5, success_count=4, error_count=1, total_tokens=9)
    live.load([stored, ProgramCounters("Q", call_count=2)])
    assert live.get("P").call_count == 6
    assert live.get("P").total_tokens == 11
    assert live.get("Q").call_count == 2
    assert merge(stored, ProgramCounters("P")).call_count == 5
