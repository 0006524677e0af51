"""Two gunicorn workers: percentiles merged through the database, and django-prometheus in /metrics.

One server for the module: a known latency distribution (the mock's ``[delay=MS]``) goes through
both workers, then ``/api/metrics``' p50/p95/p99 are checked against the exact percentiles of the
durations in the log rows, and ``/metrics`` against the writer's and the admin's activity.
"""

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.databases import ServerDatabase
from tests.support import Running
from tests.telemetry.conftest import SERVICE_PROJECT, graceful_stop, log_rows, wait_for
from tests.telemetry.test_counters import exact_percentile
from tests.telemetry.test_server import _concurrently
from tests.workers import gunicorn_workers

pytestmark = pytest.mark.integration

PROGRAMS = ("EchoAsync", "EchoSync")
PER_PROGRAM = 100


def _delay_ms(rng: random.Random) -> float:
    """Mostly fast, a slower mode, a long tail: 5-40 ms (60%), 150-400 ms (35%), 0.8-1.2 s (5%)."""
    draw = rng.random()
    if draw < 0.60:
        return rng.uniform(5, 40)
    if draw < 0.95:
        return rng.uniform(150, 400)
    return rng.uniform(800, 1200)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, telemetry_config: Path
) -> Iterator[tuple[Running, ServerDatabase]]:
    """2 workers that have answered the distribution (every row written), then stopped gracefully."""
    tmp = tmp_path_factory.mktemp("sketches")
    rng = random.Random(15)
    with gunicorn_workers(tmp, SERVICE_PROJECT, telemetry_config) as (server, database):
        for program in PROGRAMS:
            requests = [
                (f"/{program}", f"{program}-{i}", {"question": f"{program} {i} [delay={_delay_ms(rng):.3f}]"})
                for i in range(PER_PROGRAM)
            ]
            assert [r.status_code for r in _concurrently(server, requests)] == [200] * PER_PROGRAM
        wait_for(lambda: log_rows(database) == PER_PROGRAM * len(PROGRAMS), 60, "every row written")
        yield server, database
        assert graceful_stop(server), server.log()


def _durations(database: ServerDatabase, program: str) -> list[float]:
    rows = database.query(
        "SELECT duration_ms FROM telemetry_inferencelog WHERE program = %s AND duration_ms IS NOT NULL",
        [program],
    )
    return [row[0] for row in rows]


def test_percentiles_merged_over_two_workers_match_the_log_rows_within_one_percent(
    served: tuple[Running, ServerDatabase],
) -> None:
    server, database = served
    workers = database.query("SELECT DISTINCT worker FROM telemetry_inferencelog")
    assert len(workers) == 2, workers  # both workers answered, each wrote its own batches
    listing = httpx.get(f"{server.url}/api/metrics", timeout=30).json()["programs"]
    by_program = {entry["program"]: entry for entry in listing}
    for program in PROGRAMS:
        durations = _durations(database, program)
        assert len(durations) == PER_PROGRAM
        entry = by_program[program]
        assert entry["call_count"] == PER_PROGRAM
        for key, q in (("p50_latency_ms", 0.50), ("p95_latency_ms", 0.95), ("p99_latency_ms", 0.99)):
            truth = exact_percentile(durations, q)
            assert abs(entry[key] - truth) <= 0.01 * truth, (program, key, truth, entry[key])
        assert entry["avg_latency_ms"] == pytest.approx(sum(durations) / len(durations), abs=0.01)


def test_no_sketch_update_is_lost_between_the_two_writers(served: tuple[Running, ServerDatabase]) -> None:
    """Every period's buckets together hold one sketch count per timed row: no merge overwrote another."""
    _, database = served
    rows = database.query("SELECT program, period_s, latency_sketch FROM telemetry_programstats")
    counted: dict[tuple[str, int], float] = {}
    for program, period_s, stored in rows:
        sketch = json.loads(stored) if isinstance(stored, str) else stored
        counted[(program, period_s)] = counted.get((program, period_s), 0) + sum(sketch.get("counts", []))
    for program in PROGRAMS:
        for period_s in (0, 60, 600, 3600):
            assert counted[(program, period_s)] == PER_PROGRAM, (program, period_s)


def _samples(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_metrics_carry_django_prometheus_series_once_summed_over_the_workers(
    served: tuple[Running, ServerDatabase],
) -> None:
    server, database = served
    # Two browser pages (django-prometheus's middleware runs there, not on the API path); the
    # playground shows the same merged percentiles as /api/metrics.
    assert httpx.get(f"{server.url}/admin/login/", timeout=30).status_code == 200
    page = httpx.get(f"{server.url}/ui/EchoAsync", timeout=30)
    assert page.status_code == 200
    shown = re.search(r'<b data-stat="latency">([^<]*)</b>', page.text).group(1)  # type: ignore[union-attr]
    entry = httpx.get(f"{server.url}/api/metrics/EchoAsync", timeout=30).json()["metrics"]
    assert shown == " / ".join(str(entry[f"p{q}_latency_ms"]) for q in (50, 95, 99))
    samples = _samples(server.url)
    vendor = database.vendor

    executed = samples["django_db_execute_total"]
    assert [labels for labels, _ in executed] == [{"alias": "default", "vendor": vendor}]  # once, no pid
    assert executed[0][1] > 0
    if vendor == "sqlite":  # the writer's executemany counts its rows; PostgreSQL's COPY is no statement
        ((_, bulk),) = samples["django_db_execute_many_total"]
        assert bulk >= PER_PROGRAM * len(PROGRAMS)
    inserts = {labels["model"]: value for labels, value in samples["django_model_inserts_total"]}
    assert inserts["programstats"] >= 4 * len(PROGRAMS)  # each program's first row of each period
    assert samples["django_migrations_unapplied_total"] == [({"connection": "default"}, 0.0)]
    ((_, applied),) = samples["django_migrations_applied_total"]
    assert applied > 0
    # 200 API requests and the /metrics scrapes went by; only the two browser pages were counted.
    assert samples["django_http_requests_before_middlewares_total"] == [({}, 2.0)]
    buckets = {labels["le"] for labels, _ in samples["dspy_request_duration_seconds_bucket"]}
    assert {"0.005", "120.0", "+Inf"} <= buckets
