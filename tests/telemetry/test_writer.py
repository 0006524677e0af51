"""The background writer, with a stand-in for the database (its own tests use the real one)."""

import threading
import time
from collections.abc import Iterator, Sequence

import pytest
from django.db import DataError, OperationalError

from telemetry import writer as writer_module
from telemetry.records import InferenceRecord
from telemetry.writer import TelemetryWriter
from tests.telemetry.conftest import wait_for


def record(index: int, request_id: str | None = None) -> InferenceRecord:
    return InferenceRecord("P", "m", "openai/m", request_id or f"r{index}", 200, time.time(), 1.0)


class FakeDatabase:
    """Records each batch; fails the first ``failures`` writes, and any batch holding a 'bad' id."""

    def __init__(self, failures: int = 0) -> None:
        self.batches: list[list[str]] = []
        self.failures = failures
        self.lock = threading.Lock()

    def write(self, batch: Sequence[InferenceRecord]) -> None:
        with self.lock:
            if self.failures:
                self.failures -= 1
                raise OperationalError("database is locked")
            if any(r.request_id == "bad" for r in batch):
                raise DataError("value out of range")
            self.batches.append([r.request_id for r in batch])

    @property
    def ids(self) -> list[str]:
        return [request_id for batch in self.batches for request_id in batch]


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "RETRY_BASE_S", 0.001)


@pytest.fixture
def started() -> Iterator[list[TelemetryWriter]]:
    writers: list[TelemetryWriter] = []
    yield writers
    for writer in writers:
        writer.stop(timeout_s=1)


def make(database: FakeDatabase, started: list[TelemetryWriter], **options: float) -> TelemetryWriter:
    settings = {"max_queue": 1000, "batch_size": 10, "flush_interval_s": 5.0, "retry_max_s": 0.01, **options}
    writer = TelemetryWriter(database.write, **settings)  # type: ignore[arg-type]
    writer.start()
    started.append(writer)
    return writer


def test_flush_writes_everything_enqueued_before_it_in_batches_of_batch_size(started: list) -> None:
    database = FakeDatabase()
    writer = make(database, started, batch_size=10, flush_interval_s=60)
    for i in range(25):
        assert writer.enqueue(record(i))
    assert writer.flush(timeout_s=10)
    assert [len(batch) for batch in database.batches] == [10, 10, 5]
    assert database.ids == [f"r{i}" for i in range(25)]
    assert writer.written == 25


def test_a_partial_batch_is_written_after_the_flush_interval(started: list) -> None:
    database = FakeDatabase()
    writer = make(database, started, batch_size=1000, flush_interval_s=0.1)
    for i in range(3):
        writer.enqueue(record(i))
    wait_for(lambda: writer.written == 3, 10, "the interval flush")
    assert database.batches == [["r0", "r1", "r2"]]


def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    writer = TelemetryWriter(FakeDatabase().write, max_queue=5, batch_size=10, flush_interval_s=1)
    accepted = [writer.enqueue(record(i)) for i in range(8)]  # not started: nothing drains
    assert accepted == [True] * 5 + [False] * 3
    assert writer.dropped == 3
    assert writer.depth == 5


def test_a_queue_full_in_bytes_drops_and_counts_and_gives_the_bytes_back(
    started: list, caplog: pytest.LogCaptureFixture
) -> None:
    """Records are bounded in bytes too: large bodies cannot pile up to gigabytes (issue 21)."""
    from telemetry import prometheus
    from telemetry.records import Body

    def big(index: int) -> InferenceRecord:
        item = record(index)
        item.inputs = Body(b"x" * 60_000, 60_000)
        return item

    dropped = prometheus.TELEMETRY_DROPPED.labels("queue_bytes")
    dropped_before = dropped._value.get()
    database = FakeDatabase()
    writer = TelemetryWriter(
        database.write, max_queue=1000, batch_size=10, flush_interval_s=60, max_bytes=200_000
    )
    started.append(writer)
    accepted = [writer.enqueue(big(i)) for i in range(5)]  # not started: nothing is taken off
    assert accepted == [True, True, True, False, False]  # 3 x (60,000 + 1,024) fit in 200,000
    assert writer.enqueue(record(99))  # a small one still fits
    assert writer.dropped == 2 and dropped._value.get() == dropped_before + 2
    assert "latest reason: queue_bytes" in caplog.text  # never silent
    assert writer.queued_bytes == 3 * 61_024 + 1_024
    writer.start()
    assert writer.flush(timeout_s=10)
    assert database.ids == ["r0", "r1", "r2", "r99"]
    assert writer.queued_bytes == 0  # written records give their bytes back
    assert writer.enqueue(big(5))


def test_the_heap_is_trimmed_once_when_the_writer_goes_idle_after_writing(
    started: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    trimmed = threading.Event()
    calls: list[float] = []

    def trim() -> None:
        calls.append(time.monotonic())
        trimmed.set()

    monkeypatch.setattr(writer_module, "release_free_memory", trim)
    writer = make(FakeDatabase(), started, flush_interval_s=0.05)
    assert not trimmed.wait(0.3)  # idle without having written: nothing to give back
    writer.enqueue(record(1))
    assert trimmed.wait(10), "no trim after the first idle interval"
    writer.enqueue(record(2))
    wait_for(lambda: len(calls) == 2, 10, "a second trim after the second write")
    assert writer.written == 2


def test_database_errors_are_retried_without_losing_the_batch(started: list) -> None:
    database = FakeDatabase(failures=3)
    writer = make(database, started)
    for i in range(4):
        writer.enqueue(record(i))
    assert writer.flush(timeout_s=10)
    assert database.ids == ["r0", "r1", "r2", "r3"]
    assert writer.write_errors == 3
    assert writer.dropped == 0


def test_a_record_the_database_rejects_is_isolated_and_counted(started: list) -> None:
    database = FakeDatabase()
    writer = make(database, started)
    for i in range(7):
        writer.enqueue(record(i, "bad" if i == 4 else None))
    assert writer.flush(timeout_s=10)
    assert sorted(database.ids) == sorted(f"r{i}" for i in range(7) if i != 4)
    assert writer.dropped == 1


def test_stop_writes_what_is_queued(started: list) -> None:
    database = FakeDatabase()
    writer = make(database, started, flush_interval_s=60, batch_size=1000)
    for i in range(50):
        writer.enqueue(record(i))
    assert writer.stop(timeout_s=10)
    assert len(database.ids) == 50
    assert not writer.running


def test_stop_is_bounded_when_the_database_stays_down(started: list) -> None:
    database = FakeDatabase(failures=10**9)
    writer = make(database, started)
    for i in range(5):
        writer.enqueue(record(i))
    assert writer.stop(timeout_s=0.5) is True  # joined: the thread gave up at its deadline...
    assert not writer.running  # ...instead of retrying for as long as the outage lasts
    assert writer.dropped == 5  # counted, never silent
    assert database.ids == []


def test_flush_without_a_running_writer_says_so() -> None:
    writer = TelemetryWriter(FakeDatabase().write, max_queue=5, batch_size=10, flush_interval_s=1)
    assert writer.flush(timeout_s=0.1) is False


@pytest.mark.django_db(transaction=True)
def test_the_connection_is_kept_while_busy_and_given_back_when_idle(started: list) -> None:
    from django.db import connections
    from django.db.backends.signals import connection_created

    if connections["default"].vendor == "sqlite" and connections["default"].is_in_memory_db():
        pytest.skip("Django never closes an in-memory SQLite connection (DATABASE_URL runs this)")
    opened: list[str] = []
    wrappers: list = []

    def on_connection_created(**kwargs: object) -> None:
        opened.append(threading.current_thread().name)

    def write(batch: Sequence[InferenceRecord]) -> None:
        wrapper = connections["default"]  # the writer thread's own
        wrapper.ensure_connection()
        wrappers.append(wrapper)

    connection_created.connect(on_connection_created)
    try:
        writer = TelemetryWriter(write, max_queue=100, batch_size=5, flush_interval_s=0.2, retry_max_s=0.01)
        writer.start()
        started.append(writer)
        for i in range(15):
            writer.enqueue(record(i))
        assert writer.flush(timeout_s=10)
        assert len(wrappers) == 3
        assert opened.count("telemetry-writer") == 1  # one connection for the three batches
        wait_for(lambda: wrappers[0].connection is None, 10, "the idle writer to close its connection")
    finally:
        connection_created.disconnect(on_connection_created)


def test_another_apps_writer_counts_its_own_bytes_and_leaves_the_telemetry_series(started: list) -> None:
    """The loop's trace writer: its records' sizes from its sizer, the telemetry_* series untouched."""
    from telemetry import prometheus

    database = FakeDatabase()
    writer = TelemetryWriter(
        database.write, max_queue=10, batch_size=10, flush_interval_s=0.05, max_bytes=250,
        sizer=lambda _: 100, metrics=False,
    )  # fmt: skip
    written_before = prometheus.TELEMETRY_WRITTEN._value.get()
    dropped_before = prometheus.TELEMETRY_DROPPED.labels("queue_bytes")._value.get()
    assert [writer.enqueue(record(i)) for i in range(3)] == [True, True, False]  # 300 > 250 bytes
    assert writer.queued_bytes == 200 and writer.dropped == 1
    writer.start()
    started.append(writer)
    assert writer.flush(timeout_s=10)
    assert database.ids == ["r0", "r1"] and writer.queued_bytes == 0
    assert prometheus.TELEMETRY_WRITTEN._value.get() == written_before
    assert prometheus.TELEMETRY_DROPPED.labels("queue_bytes")._value.get() == dropped_before
