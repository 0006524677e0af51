"""Two writers on the same aggregate row: the second waits for the first's lock, no sketch is lost."""

import threading
import time

import pytest
from django.db import connection, transaction

from telemetry import storage
from telemetry.models import TOTAL, ProgramStats
from telemetry.selectors import sketch_from_row
from tests.telemetry.factories import make_record


def _lock_waiters() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_a_writer_waits_for_the_row_another_holds_then_merges_into_its_result() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite runs one writing transaction at a time (IMMEDIATE): nothing interleaves")
    storage.inference_logs_write([make_record(request_id="first", duration_ms=10)])
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first_writer() -> None:  # a batch whose transaction stays open, its rows locked
        try:
            with transaction.atomic():
                storage.inference_logs_write(
                    [make_record(request_id=f"a{i}", duration_ms=100) for i in range(5)]
                )
                holding.set()
                release.wait(30)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    def second_writer() -> None:
        try:
            storage.inference_logs_write(
                [make_record(request_id=f"b{i}", duration_ms=1000) for i in range(7)]
            )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    first = threading.Thread(target=first_writer)
    first.start()
    assert holding.wait(30)
    second = threading.Thread(target=second_writer)
    second.start()
    deadline = time.monotonic() + 30
    while _lock_waiters() == 0:  # the second writer is blocked on the first one's row lock
        assert time.monotonic() < deadline, "the second writer never waited for the lock"
        time.sleep(0.02)
    release.set()
    first.join(30)
    second.join(30)
    assert not errors, errors

    sketch = sketch_from_row(ProgramStats.objects.get(program="P", period_s=TOTAL))
    assert sketch.count == 1 + 5 + 7
    assert sketch.percentile(0) == pytest.approx(10, rel=0.005)
    assert sketch.percentile(0.5) == pytest.approx(1000, rel=0.005)  # rank 6 of 13: the 7 slow ones
    assert sketch.total_ms == pytest.approx(10 + 500 + 7000)
