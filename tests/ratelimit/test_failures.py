"""Redis stopped and restarted under the store: StoreUnavailable, one log line each way, reconnection."""

import asyncio
import logging

import pytest

from ratelimit import StoreUnavailable, failures
from ratelimit.backends.redis import RedisStore
from tests.redis_servers import RedisServer


def _incident_lines(caplog: pytest.LogCaptureFixture) -> tuple[int, int]:
    messages = [record.getMessage() for record in caplog.records if record.name == "ratelimit.failures"]
    down = sum("unavailable" in message for message in messages)
    back = sum("reachable again" in message for message in messages)
    return down, back


def test_redis_down_raises_store_unavailable_logs_once_and_reconnects(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ratelimit.failures")
    store = RedisStore(own_redis.url, prefix="test:down:")
    assert store.take("k", 1, 100, 60).allowed
    assert asyncio.run(store.atake("k", 1, 100, 60)).allowed  # the async client is connected too

    own_redis.stop()
    for _ in range(20):  # sync and async, every operation: StoreUnavailable, nothing else
        with pytest.raises(StoreUnavailable):
            store.take("k", 1, 100, 60)
        with pytest.raises(StoreUnavailable):
            store.acquire("slots", 1, 10)
        with pytest.raises(StoreUnavailable):
            asyncio.run(store.atake("k", 1, 100, 60))
    assert _incident_lines(caplog) == (1, 0)  # 60 failures, one warning
    assert failures.in_incident()

    own_redis.start()  # same port, empty (no persistence)
    assert store.take("k", 1, 100, 60).allowed  # a stale pooled connection is retried once
    assert asyncio.run(store.atake("k", 1, 100, 60)).allowed
    assert store.take("k", 1, 100, 60).remaining == 97
    assert _incident_lines(caplog) == (1, 1)
    assert not failures.in_incident()


def test_limit_failed_counts_by_kind_and_mode() -> None:
    child = failures.STORE_ERRORS.labels("models", "fail_closed")
    before = child._value.get()
    assert failures.limit_failed("models", "fail_closed") is False
    assert failures.limit_failed("keys", "fail_open") is True
    assert child._value.get() == before + 1
