"""A model's budget and circuit on the limit store (programs/model_limits.py): the in-process store,
and a Redis that does not answer (a closed loopback port) for fail_open / fail_closed."""

import asyncio
import time
from collections.abc import Iterator

import pytest

from loadtest.servers import free_port
from programs.circuits import ALLOWED
from programs.model_limits import StoreBudget, StoreCircuit
from programs.upstream import LimitsUnavailable
from ratelimit import failures
from ratelimit.backends.memory import MemoryStore
from ratelimit.backends.redis import RedisStore
from ratelimit.failures import STORE_ERRORS


def test_rpm_budget_grants_exactly_its_requests_then_says_when() -> None:
    budget = StoreBudget(MemoryStore(), "m", rpm=3, tpm=None, max_wait_s=0, mode="fail_open")
    grants = [budget.reserve(100) for _ in range(4)]
    assert [grant.allowed for grant in grants] == [True, True, True, False]
    refused = grants[-1]
    assert refused.limit == "rpm" and 0 < refused.retry_after_s <= 61


def test_tpm_reservation_is_settled_with_the_real_usage() -> None:
    budget = StoreBudget(MemoryStore(), "m", rpm=None, tpm=100, max_wait_s=0, mode="fail_open")
    first = budget.reserve(80)
    assert first.allowed
    assert budget.reserve(30).limit == "tpm"  # 80 + 30 > 100
    budget.settle(first, 10)  # the call used 10 tokens, not the 80 reserved
    assert budget.reserve(30).allowed


def test_async_budget_takes_rpm_and_tpm_together() -> None:
    budget = StoreBudget(MemoryStore(), "m", rpm=10, tpm=50, max_wait_s=0, mode="fail_open")

    async def reserve() -> list[bool]:
        return [(await budget.areserve(20)).allowed for _ in range(3)]

    # The third fails on tpm; rpm was not charged for it (all or nothing): 8 requests remain.
    assert asyncio.run(reserve()) == [True, True, False]
    assert [budget.reserve(1).allowed for _ in range(9)] == [True] * 8 + [False]


def test_a_call_waits_for_room_within_max_wait_then_is_refused_at_once() -> None:
    """server.max_queue_ms: room that comes back within the wait is waited for; later room is not."""
    patient = StoreBudget(MemoryStore(), "m", rpm=1, tpm=None, max_wait_s=5, mode="fail_open", window_s=0.6)
    assert patient.reserve(1).allowed
    assert patient.reserve(1).allowed  # the first charge left the 0.6 s window while this one waited

    hasty = StoreBudget(MemoryStore(), "m", rpm=1, tpm=None, max_wait_s=0.1, mode="fail_open", window_s=60)
    assert hasty.reserve(1).allowed
    refused = asyncio.run(hasty.areserve(1))
    assert not refused.allowed and refused.retry_after_s > 0.1  # more than the wait: not waited for


def test_circuit_opens_after_failures_refuses_then_one_trial_closes_it() -> None:
    circuit = StoreCircuit(MemoryStore(), "m", failures=2, cooldown_s=0.2, mode="fail_open")
    assert circuit.record(circuit.check(), ok=False) is None
    assert circuit.record(circuit.check(), ok=False) == "open"
    refused = circuit.check()
    assert not refused.allowed and 0 < refused.retry_after_s <= 0.2

    deadline = time.monotonic() + 5
    while not (trial := circuit.check()).allowed:
        assert time.monotonic() < deadline, "no trial call after the cooldown"
        time.sleep(0.01)
    assert trial.trial
    assert not circuit.check().allowed  # one trial at a time
    assert asyncio.run(circuit.arecord(trial, ok=True)) == "closed"
    assert asyncio.run(circuit.acheck()).clean  # closed, nothing counted: a success writes nothing


def errors(mode: str) -> float:
    return STORE_ERRORS.labels("models", mode)._value.get()


@pytest.fixture
def unreachable() -> Iterator[RedisStore]:
    yield RedisStore(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    failures.store_answered()  # end this process's incident: the next test's starts afresh


def test_redis_down_fail_open_skips_the_checks_and_counts_them(unreachable: RedisStore) -> None:
    before = errors("fail_open")
    budget = StoreBudget(unreachable, "m", rpm=1, tpm=None, max_wait_s=0, mode="fail_open")
    circuit = StoreCircuit(unreachable, "m", failures=1, cooldown_s=1, mode="fail_open")

    assert [budget.reserve(1).allowed for _ in range(3)] == [True, True, True]
    assert circuit.check() == ALLOWED
    assert asyncio.run(circuit.acheck()) == ALLOWED
    assert circuit.record(ALLOWED, ok=False) is None
    assert errors("fail_open") - before == 6


def test_redis_down_fail_closed_refuses_with_a_503_error(unreachable: RedisStore) -> None:
    before = errors("fail_closed")
    budget = StoreBudget(unreachable, "m", rpm=1, tpm=None, max_wait_s=0, mode="fail_closed")
    circuit = StoreCircuit(unreachable, "m", failures=1, cooldown_s=1, mode="fail_closed")

    with pytest.raises(LimitsUnavailable) as refused:
        asyncio.run(budget.areserve(1))
    assert refused.value.retry_after == 1.0
    with pytest.raises(LimitsUnavailable):
        circuit.check()
    assert errors("fail_closed") - before == 2
