"""The store under test, both backends: in-process (a clock the test moves) and Redis.

Redis: ``REDIS_URL`` when set (CI's second pass), else a redis-server of the session's own when the
binary is installed; each test gets a key prefix of its own, so tests never see each other's keys.
"""

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ratelimit.backends.memory import MemoryStore
from ratelimit.backends.redis import RedisStore
from tests.redis_servers import RedisServer, redis_server


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def memory(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock=clock)


@pytest.fixture
def redis_store(redis_url: str) -> RedisStore:
    return RedisStore(redis_url, prefix=f"test:{uuid.uuid4().hex[:10]}:")


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> MemoryStore | RedisStore:
    """Each backend in turn, for the tests that need no control of time."""
    return request.getfixturevalue("memory" if request.param == "memory" else "redis_store")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server this test may stop and restart."""
    with redis_server(tmp_path) as server:
        yield server
