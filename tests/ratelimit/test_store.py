"""The store's operations on both backends (in-process and Redis), sync and async forms."""

import asyncio
import threading

import pytest

from ratelimit import SlotClaim, Store
from ratelimit.backends.memory import MemoryStore
from ratelimit.backends.redis import RedisStore
from ratelimit.windows import Charge
from tests.ratelimit.conftest import FakeClock
from tests.telemetry.conftest import wait_for


def test_budget_counts_exactly_sync_and_async(store: Store) -> None:
    sync = [store.take("k", 1, 10, 60).allowed for _ in range(6)]

    async def rest() -> list[bool]:
        return [(await store.atake("k", 1, 10, 60)).allowed for _ in range(6)]

    assert sync + asyncio.run(rest()) == [True] * 10 + [False] * 2


def test_concurrent_takes_from_threads_and_tasks_admit_exactly_the_limit(store: Store) -> None:
    """Threads (sync programs) and event-loop tasks (async ones) race for one budget of 100."""
    allowed: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(25):
            decision = store.take("shared", 1, 100, 60)
            with lock:
                allowed.append(decision.allowed)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()

    async def tasks() -> list[bool]:
        decisions = await asyncio.gather(*(store.atake("shared", 1, 100, 60) for _ in range(100)))
        return [d.allowed for d in decisions]

    from_tasks = asyncio.run(tasks())
    for thread in threads:
        thread.join()
    assert sum(allowed) + sum(from_tasks) == 100


def test_two_redis_clients_share_one_budget(redis_url: str) -> None:
    """Two stores on one Redis (two processes, two machines) count against the same numbers."""
    first = RedisStore(redis_url, prefix="test:shared-budget:")
    second = RedisStore(redis_url, prefix="test:shared-budget:")
    first._sync.delete("test:shared-budget:k")
    results = [store.take("k", 1, 30, 60).allowed for _ in range(30) for store in (first, second)]
    assert sum(results) == 30


def test_settle_and_take_all_on_both_backends(store: Store) -> None:
    first = store.take("t", 400, 1000, 86400)
    store.take("t", 400, 1000, 86400)
    store.settle(first.reservation, 50)
    assert store.take("t", 550, 1000, 86400).allowed
    assert not store.take("t", 1, 1000, 86400).allowed
    charges = [Charge("r", 1, 5, 60), Charge("t", 1, 1000, 86400)]
    assert [d.allowed for d in store.take_all(charges)] == [False, False]
    assert store.take("r", 1, 5, 60).remaining == 4  # nothing was charged to r

    async def settle_async() -> bool:
        second = await store.atake_all([Charge("u", 0.5, 1.0, 60), Charge("v", 1, 1, 60)])
        await store.asettle_all([(second[0].reservation, 0.0), (second[1].reservation, 0.0)])
        return all(
            d.allowed for d in await store.atake_all([Charge("u", 1.0, 1.0, 60), Charge("v", 1, 1, 60)])
        )

    assert asyncio.run(settle_async())


def test_slots_are_limited_and_released(store: Store) -> None:
    slots = [store.acquire("flight", 3, 60) for _ in range(4)]
    assert [slot.acquired for slot in slots] == [True, True, True, False]
    assert [slot.remaining for slot in slots[:3]] == [2, 1, 0]
    store.release("flight", slots[0].lease_id)

    async def again() -> bool:
        slot = await store.aacquire("flight", 3, 60)
        await store.arelease("flight", slot.lease_id)
        return slot.acquired

    assert asyncio.run(again())


def test_a_dead_holders_slot_comes_back_when_its_lease_expires(memory: MemoryStore, clock: FakeClock) -> None:
    assert memory.acquire("flight", 1, 30).acquired  # never released: its holder crashed
    assert not memory.acquire("flight", 1, 30).acquired
    clock.advance(30)
    assert memory.acquire("flight", 1, 30).acquired


def test_a_dead_holders_slot_comes_back_in_redis(redis_store: RedisStore) -> None:
    assert redis_store.acquire("flight", 1, 0.3).acquired
    assert not redis_store.acquire("flight", 1, 0.3).acquired
    wait_for(lambda: redis_store.acquire("flight", 1, 0.3).acquired, 5, "the lease to expire")


def test_circuit_opens_allows_one_trial_and_closes(memory: MemoryStore, clock: FakeClock) -> None:
    assert memory.circuit_check("m", 5).state == "closed"
    assert [memory.circuit_record("m", False, 3, 10) for _ in range(3)] == [False, False, True]
    refused = memory.circuit_check("m", 5)
    assert (refused.allowed, refused.state, refused.retry_after_s) == (False, "open", 10)
    assert memory.circuit_record("m", False, 3, 10) is False  # a late failure keeps the cooldown
    clock.advance(10)
    trial = memory.circuit_check("m", 5)
    assert (trial.allowed, trial.state) == (True, "trial")
    assert not memory.circuit_check("m", 5).allowed  # one trial at a time
    assert memory.circuit_record("m", True, 3, 10) is False
    assert memory.circuit_check("m", 5).state == "closed"


def test_a_failed_trial_reopens_and_a_lost_trial_lets_another_through(
    memory: MemoryStore, clock: FakeClock
) -> None:
    for _ in range(2):
        memory.circuit_record("m", False, 2, 10)
    clock.advance(10)
    assert memory.circuit_check("m", 5).state == "trial"
    assert memory.circuit_record("m", False, 2, 10) is True  # the trial failed: open again
    assert memory.circuit_check("m", 5).state == "open"
    clock.advance(10)
    assert memory.circuit_check("m", 5).state == "trial"  # this trial's holder dies...
    clock.advance(5)
    assert memory.circuit_check("m", 5).state == "trial"  # ...its lease expires: a new trial


def test_circuit_state_is_shared_through_redis(redis_url: str) -> None:
    first = RedisStore(redis_url, prefix="test:circuit:")
    second = RedisStore(redis_url, prefix="test:circuit:")
    first._sync.delete("test:circuit:m")
    assert first.circuit_record("m", False, 2, 0.3) is False
    assert second.circuit_record("m", False, 2, 0.3) is True  # the second server's failure opens it
    assert first.circuit_check("m", 5).state == "open"
    trial = wait_for(lambda: (check := second.circuit_check("m", 5)).allowed and check, 5, "the cooldown")
    assert trial.state == "trial"
    assert first.circuit_check("m", 5).state == "open"  # the other server waits for the trial

    async def close() -> str:
        await second.acircuit_record("m", True, 2, 0.3)
        return (await first.acircuit_check("m", 5)).state

    assert asyncio.run(close()) == "closed"


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_async_forms_run_on_several_event_loops(backend: str, request: pytest.FixtureRequest) -> None:
    """A new loop (tests, a restarted worker) gets a client of its own."""
    store: Store = request.getfixturevalue("memory" if backend == "memory" else "redis_store")
    for _ in range(2):
        assert asyncio.run(store.atake("loops", 1, 10, 60)).allowed


def test_budgets_and_a_slot_in_one_take_all_or_nothing(store: Store) -> None:
    claim = SlotClaim("slot", 2, 60)
    charges = [Charge("req", 1, 3, 60)]
    first, first_slot = store.take_with_slot(charges, claim)
    _, second_slot = store.take_with_slot(charges, claim)
    assert [first_slot.acquired, second_slot.acquired] == [True, True]
    assert (first_slot.remaining, second_slot.remaining) == (1, 0)
    full, full_slot = store.take_with_slot(charges, claim)  # the slot is full: the budget is not charged
    assert not full_slot.acquired and full_slot.remaining == 0 and not full[0].allowed
    store.settle_all([(first[0].reservation, 1)])
    store.release("slot", first_slot.lease_id)
    third, third_slot = store.take_with_slot(charges, claim)  # the budget's last request
    assert third[0].allowed and third_slot.acquired

    async def budget_refuses() -> tuple[bool, bool, int]:
        await store.arelease("slot", third_slot.lease_id)
        decisions, slot = await store.atake_with_slot(charges, claim)  # 3 of 3 used: refused
        return decisions[0].allowed, slot.acquired, slot.remaining

    assert asyncio.run(budget_refuses()) == (False, False, 1)  # the slot was free but not taken
