"""The windowed budget's algorithm, on the in-process store with a clock the test moves."""

import random

from ratelimit.backends.memory import MemoryStore
from ratelimit.windows import BUCKETS, Charge
from tests.ratelimit.conftest import FakeClock


def test_a_burst_gets_exactly_the_limit(memory: MemoryStore) -> None:
    decisions = [memory.take("k", 1, 30, 60) for _ in range(60)]
    assert [d.allowed for d in decisions] == [True] * 30 + [False] * 30
    assert [d.remaining for d in decisions[:3]] == [29, 28, 27]
    assert decisions[29].remaining == 0
    assert all(d.reservation is None for d in decisions[30:])


def test_capacity_comes_back_a_window_after_it_was_taken(memory: MemoryStore, clock: FakeClock) -> None:
    width = 60 / BUCKETS
    clock.now = 6000.0  # the start of a bucket
    assert memory.take("k", 1, 2, 60).allowed
    clock.advance(10)
    assert memory.take("k", 1, 2, 60).allowed
    refused = memory.take("k", 1, 2, 60)
    assert not refused.allowed
    # The first charge (bucket at 6000, one bucket wide) stops counting a window after its bucket ends.
    assert refused.retry_after_s == 60 + width - 10
    clock.advance(refused.retry_after_s - 0.001)
    assert not memory.take("k", 1, 2, 60).allowed
    clock.advance(0.001)
    assert memory.take("k", 1, 2, 60).allowed


def test_no_window_of_window_s_ever_holds_more_than_the_limit(clock: FakeClock) -> None:
    """Random arrivals for ten windows: every interval of window_s seconds stays within the limit."""
    store = MemoryStore(clock=clock)
    rng = random.Random(14)
    admitted: list[float] = []
    for _ in range(5000):
        clock.advance(rng.expovariate(1 / 0.15))  # ~400 arrivals per 60 s against a limit of 50
        if store.take("k", 1, 50, 60).allowed:
            admitted.append(clock.now)
    assert len(admitted) > 400  # the limit was reached window after window...
    start = 0
    for end, at in enumerate(admitted):  # ...and never exceeded: admitted[start..end] span < 60 s
        while at - admitted[start] >= 60:
            start += 1
        assert end - start + 1 <= 50


def test_amounts_are_reserved_then_settled(memory: MemoryStore) -> None:
    reserved = memory.take("tokens", 400, 1000, 86400)
    assert reserved.allowed and reserved.remaining == 600
    assert memory.take("tokens", 400, 1000, 86400).allowed  # 800 reserved
    assert not memory.take("tokens", 400, 1000, 86400).allowed
    memory.settle(reserved.reservation, 100)  # the first request used 100, not 400
    third = memory.take("tokens", 400, 1000, 86400)
    assert third.allowed and third.remaining == 100
    memory.settle(third.reservation, 550)  # used more than reserved: charged
    assert memory.take("tokens", 1, 1000, 86400).allowed is False


def test_settling_a_reservation_that_left_the_window_changes_nothing(
    memory: MemoryStore, clock: FakeClock
) -> None:
    old = memory.take("k", 10, 10, 60)
    clock.advance(200)
    fresh = memory.take("k", 10, 10, 60)
    memory.settle(old.reservation, 0)  # must not give back what the fresh charge took
    assert fresh.allowed and not memory.take("k", 1, 10, 60).allowed


def test_more_than_the_whole_limit_is_refused_for_a_window(memory: MemoryStore) -> None:
    decision = memory.take("k", 11, 10, 60)
    assert not decision.allowed and decision.retry_after_s == 60


def test_dollar_amounts_add_up_to_their_limit(memory: MemoryStore) -> None:
    assert all(memory.take("usd", 0.1, 0.3, 60).allowed for _ in range(3))
    assert not memory.take("usd", 0.1, 0.3, 60).allowed


def test_take_all_charges_every_budget_or_none(memory: MemoryStore) -> None:
    charges = [Charge("rpm", 1, 10, 60), Charge("tokens", 300, 1000, 86400)]
    assert all(d.allowed for d in memory.take_all(charges))
    assert all(d.allowed for d in memory.take_all(charges))
    assert all(d.allowed for d in memory.take_all(charges))
    refused = memory.take_all(charges)  # tokens: 900 + 300 > 1000
    assert [d.allowed for d in refused] == [False, False]
    assert refused[0].retry_after_s == 0  # rpm had room: not the reason
    assert refused[1].retry_after_s > 0
    assert memory.take("rpm", 1, 10, 60).remaining == 6  # the refused take charged no request
