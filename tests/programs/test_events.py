"""The event API (programs/events.py): subscriptions that end by themselves, and never break a call."""

import gc
import logging
import weakref
from collections import Counter
from typing import Any

import pytest

from programs import events
from programs.events import Event, RequestStarted
from tests.programs.conftest import concurrently, post
from tests.support import Running


class Listener:
    def __init__(self, calls: list[object]) -> None:
        self.calls = calls

    def on_event(self, payload: object) -> None:
        self.calls.append(payload)


def test_a_collected_subscriber_is_dropped_and_never_called_again() -> None:
    calls: list[object] = []
    listener = Listener(calls)
    before = len(events.request_started)
    subscription = events.subscribe(events.request_started, listener.on_event)
    started = RequestStarted("P", "r1")
    events.request_started.emit(started)
    assert calls == [started]
    assert len(events.request_started) == before + 1

    alive = weakref.ref(listener)
    del listener
    gc.collect()

    assert alive() is None  # the event did not keep the subscriber's object alive
    assert not subscription.active
    assert len(events.request_started) == before  # dropped by itself, no close() needed
    events.request_started.emit(RequestStarted("P", "r2"))
    assert calls == [started]  # not called after it was collected


def test_close_ends_a_subscription_and_is_idempotent() -> None:
    event: Event[int] = Event("test")
    calls: list[int] = []
    subscription = event.subscribe(calls.append)
    event.emit(1)
    subscription.close()
    subscription.close()
    event.emit(2)
    assert calls == [1]
    assert len(event) == 0
    with event.subscribe(calls.append):
        event.emit(3)
    event.emit(4)
    assert calls == [1, 3]


def test_functions_are_held_strongly_unless_asked_otherwise() -> None:
    event: Event[int] = Event("test")
    calls: list[int] = []

    def strong(payload: int) -> None:
        calls.append(payload)

    def weak(payload: int) -> None:
        calls.append(-payload)

    event.subscribe(strong)
    event.subscribe(weak, weak=True)
    event.emit(1)
    assert calls == [1, -1]
    del strong, weak
    gc.collect()
    event.emit(2)
    assert calls == [1, -1, 2]  # the plain subscription stays; the weak one went with its function
    assert len(event) == 1


def test_a_failing_subscriber_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    event: Event[int] = Event("test")
    calls: list[int] = []

    def broken(payload: int) -> None:
        raise RuntimeError("subscriber bug")

    event.subscribe(broken)
    event.subscribe(calls.append)
    with caplog.at_level(logging.ERROR, logger="programs.events"):
        event.emit(7)  # does not raise
    assert calls == [7]
    assert "subscriber bug" in caplog.text


def test_subscribing_or_closing_during_an_emit_takes_effect_next_time() -> None:
    event: Event[int] = Event("test")
    calls: list[str] = []
    late = []

    def first(payload: int) -> None:
        calls.append(f"first {payload}")
        late.append(event.subscribe(lambda p: calls.append(f"late {p}")))
        own.close()

    own = event.subscribe(first)
    event.emit(1)
    event.emit(2)
    assert calls == ["first 1", "late 2"]


@pytest.mark.integration
def test_10000_requests_leave_the_registered_callbacks_unchanged(concurrency_server: Running) -> None:
    """DSPy callbacks (global, per call, per LM) and event subscribers, counted in the server."""

    def registrations() -> dict[str, Any]:
        response = post(concurrency_server, "Registrations")
        assert response.status_code == 200, response.text
        return response.json()

    before = registrations()
    assert before["lm_callbacks"] and all(count == 1 for count in before["lm_callbacks"].values())
    requests = [
        ("/Correlated" if i % 2 else "/CorrelatedAsync", {}, {"question": f"callbacks {i}"})
        for i in range(10_000)
    ]
    statuses = Counter(status for status, _, _ in concurrently(concurrency_server, requests, limit=32))
    assert statuses == {200: 10_000}
    assert registrations() == before
