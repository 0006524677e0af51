"""Waiting for capacity within a bound: served when it comes back in time, refused at once otherwise."""

import asyncio

from ratelimit.backends.memory import MemoryStore
from ratelimit.waiting import atake_within, take_within


def test_a_wait_that_fits_the_bound_is_served() -> None:
    store = MemoryStore()  # the real clock: the helper sleeps for real
    assert store.take("k", 1, 1, 0.6).allowed
    decision = asyncio.run(atake_within(store, "k", 1, 1, 0.6, max_wait_s=2.0))
    assert decision.allowed
    assert take_within(store, "k", 1, 1, 0.6, max_wait_s=2.0).allowed


def test_a_wait_longer_than_the_bound_is_refused_without_waiting() -> None:
    store = MemoryStore()
    assert store.take("k", 1, 1, 60).allowed
    decision = asyncio.run(atake_within(store, "k", 1, 1, 60, max_wait_s=0.5))
    assert not decision.allowed and decision.retry_after_s > 0.5
    assert not take_within(store, "k", 1, 1, 60, max_wait_s=0.5).allowed
