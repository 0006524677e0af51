"""Claiming a fire time in the database: one winner per (job, fire time), whoever asks and how often."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from scheduling.models import CronRun
from scheduling.services import cron_run_claim, cron_run_finish

FIRE = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
# Not inside a test transaction: the services run in autocommit and give their connection back,
# as they do on the scheduler's threads.
pytestmark = pytest.mark.django_db(transaction=True)


def test_the_first_claim_wins_and_a_second_for_the_same_fire_time_gets_none() -> None:
    run = cron_run_claim(job="Echo.Nightly", fire_time=FIRE, worker="a:1")
    assert run is not None and run.status == CronRun.Status.RUNNING
    assert cron_run_claim(job="Echo.Nightly", fire_time=FIRE, worker="b:2") is None
    assert cron_run_claim(job="Echo.Nightly", fire_time=FIRE + timedelta(minutes=1), worker="b:2") is not None
    assert cron_run_claim(job="Other.Nightly", fire_time=FIRE, worker="b:2") is not None
    assert list(
        CronRun.objects.filter(fire_time=FIRE, job="Echo.Nightly").values_list("worker", flat=True)
    ) == ["a:1"]


@pytest.mark.skipif(
    connection.vendor == "sqlite",
    reason="the in-memory test database's shared cache fails concurrent writers instead of making them wait; "
    "servers on a SQLite file race in tests/scheduling/test_cron.py",
)
def test_concurrent_claims_from_many_threads_have_exactly_one_winner_per_fire_time() -> None:
    fire_times = [FIRE + timedelta(minutes=i) for i in range(5)]
    start = threading.Barrier(8)

    def contender(worker: int) -> list[bool]:
        start.wait()
        return [
            cron_run_claim(job="Echo.Nightly", fire_time=t, worker=f"w:{worker}") is not None
            for t in fire_times
        ]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(contender, range(8)))
    assert [sum(won[i] for won in results) for i in range(5)] == [1] * 5
    assert CronRun.objects.count() == 5


def test_finishing_a_run_records_its_counts_duration_and_a_bounded_error() -> None:
    run = cron_run_claim(job="Echo.Nightly", fire_time=FIRE, worker="a:1")
    assert run is not None
    cron_run_finish(run, status=CronRun.Status.PARTIAL, items=5, ok=2, failed=1, error="x" * 10_000)
    row = CronRun.objects.get(pk=run.pk)
    assert (row.status, row.items, row.ok, row.failed, row.not_run) == ("partial", 5, 2, 1, 2)
    assert row.finished_at is not None and row.finished_at >= row.started_at
    assert row.duration_ms is not None and row.duration_ms >= 0
    assert len(row.error) == 4000
