"""Counters and the latency sketch: percentiles against exact values, merging, bounded memory."""

import math
import random
from collections.abc import Callable

import pytest

from telemetry.counters import ProcessCounters, ProgramCounters, merge
from telemetry.sketches import RELATIVE_ACCURACY, LatencySketch

QUANTILES = (0.0, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0)
SAMPLES = 20_000


def exact_percentile(samples: list[float], q: float) -> float:
    """The sample of rank floor(q (n - 1)) in sorted order: the quantile the sketch estimates."""
    ordered = sorted(samples)
    return ordered[math.floor(q * (len(ordered) - 1))]


def uniform(rng: random.Random) -> float:
    return rng.uniform(5, 2000)


def bimodal(rng: random.Random) -> float:
    """A cache hit (~12 ms) or a real LLM call (~1.8 s): percentiles fall on either side of a gap."""
    return rng.gauss(12, 2) if rng.random() < 0.6 else rng.gauss(1800, 300)


def heavy_tail(rng: random.Random) -> float:
    """Pareto (alpha 1.2: finite mean, infinite variance) from 50 ms, capped at ten minutes."""
    return min(50 * rng.paretovariate(1.2), 600_000)


@pytest.mark.parametrize("draw", [uniform, bimodal, heavy_tail], ids=lambda f: f.__name__)
def test_percentiles_are_within_half_a_percent_of_the_exact_value(
    draw: Callable[[random.Random], float],
) -> None:
    rng = random.Random(15)
    samples = [max(0.5, draw(rng)) for _ in range(SAMPLES)]
    sketch = LatencySketch()
    for value in samples:
        sketch.observe(value)
    for q in QUANTILES:
        truth, estimate = exact_percentile(samples, q), sketch.percentile(q)
        assert estimate is not None
        assert abs(estimate - truth) <= RELATIVE_ACCURACY * truth * (1 + 1e-9), (q, truth, estimate)
    assert sketch.count == SAMPLES
    assert sketch.mean() == pytest.approx(sum(samples) / SAMPLES)


def test_merged_sketches_answer_as_one_sketch_of_every_value_and_survive_storage() -> None:
    """Four writers' sketches, each stored and read back, merged: the percentiles of the union."""
    rng = random.Random(7)
    parts = [[bimodal(rng) for _ in range(2_500)], [uniform(rng) for _ in range(2_500)],
             [heavy_tail(rng) for _ in range(2_500)], [0.0, 0.0004]]  # fmt: skip
    merged = LatencySketch()
    for part in parts:
        sketch = LatencySketch()
        for value in part:
            sketch.observe(value)
        merged.merge(LatencySketch.from_json(sketch.to_json(), sketch.total_ms))
    union = [v for part in parts for v in part]
    assert merged.count == len(union)
    for q in QUANTILES[1:]:
        truth = exact_percentile(union, q)
        assert abs(merged.percentile(q) - truth) <= RELATIVE_ACCURACY * truth * (1 + 1e-9), q  # type: ignore[operator]
    assert merged.percentile(0) == pytest.approx(0.001, rel=RELATIVE_ACCURACY)  # below 1 µs: counted as 1 µs


def test_a_single_call_reports_its_own_latency() -> None:
    """The issue's example: one 12 ms call showed p50 17.5 ms next to avg 12 ms with buckets."""
    counters = ProgramCounters("P")
    counters.record(success=True, duration_ms=12, finished_at=1.0, prompt_tokens=0, completion_tokens=0,
                    cost_usd=0.0)  # fmt: skip
    body = counters.as_dict()
    assert body["avg_latency_ms"] == 12
    for key in ("p50_latency_ms", "p95_latency_ms", "p99_latency_ms"):
        assert body[key] == pytest.approx(12, rel=RELATIVE_ACCURACY), key


def test_sketch_size_is_bounded_by_the_range_not_the_number_of_values() -> None:
    sketch = LatencySketch()
    for i in range(100_000):
        sketch.observe(1 + (i * 7919) % 600_000)  # 1 ms .. 10 min
    bins = len(sketch.to_json()["counts"])
    assert bins <= math.log(600_000) / math.log((1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)) + 2
    assert sketch.count == 100_000


def test_empty_sketch_has_no_percentile_and_stores_as_an_empty_object() -> None:
    sketch = LatencySketch()
    assert sketch.percentile(0.95) is None and sketch.mean() is None
    assert sketch.to_json() == {} and LatencySketch.from_json({}).count == 0
    assert LatencySketch.from_json(None, 5.0).total_ms == 5.0
    body = ProgramCounters("P").as_dict()
    assert body["p50_latency_ms"] is None and body["avg_latency_ms"] is None


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
