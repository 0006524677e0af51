"""The in-memory API key table: no database query per request, bounded staleness, failures contained."""

import asyncio
import hashlib
import time

import pytest

from apikeys import auth
from apikeys.auth import Caller, KeyCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Table:
    """Stands in for the database: the active keys, and how often they were read."""

    def __init__(self, *tokens: str) -> None:
        self.keys = {digest(token): Caller(i, f"key {i}") for i, token in enumerate(tokens)}
        self.reads = 0
        self.fail = False

    def __call__(self) -> dict[str, Caller]:
        self.reads += 1
        if self.fail:
            raise RuntimeError("database is down")
        return dict(self.keys)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Table:
    fake = Table("good-key")
    monkeypatch.setattr(auth, "active_keys", fake)
    return fake


def test_known_keys_are_answered_from_memory_until_the_ttl(table: Table) -> None:
    clock = Clock()
    cache = KeyCache(ttl_s=5, miss_reload_s=1, clock=clock)

    async def scenario() -> None:
        assert (await cache.lookup("good-key")) == Caller(0, "key 0")
        for _ in range(100):
            assert await cache.lookup("good-key") is not None
        assert table.reads == 1
        clock.now += 5.1
        assert await cache.lookup("good-key") is not None
        assert table.reads == 2

    asyncio.run(scenario())


def test_revocation_takes_effect_at_the_next_reload(table: Table) -> None:
    clock = Clock()
    cache = KeyCache(ttl_s=5, miss_reload_s=1, clock=clock)

    async def scenario() -> None:
        assert await cache.lookup("good-key") is not None
        table.keys.clear()  # revoked in the database
        clock.now += 4.9
        assert await cache.lookup("good-key") is not None  # still within the TTL
        clock.now += 0.2
        assert await cache.lookup("good-key") is None

    asyncio.run(scenario())


def test_unknown_keys_reload_at_most_once_per_interval(table: Table) -> None:
    clock = Clock()
    cache = KeyCache(ttl_s=5, miss_reload_s=1, clock=clock)

    async def scenario() -> None:
        assert await cache.lookup("good-key") is not None
        for _ in range(50):
            assert await cache.lookup("guess") is None
        assert table.reads == 1  # a flood of wrong keys does not reach the database
        table.keys[digest("new-key")] = Caller(7, "new")  # created in the admin just now
        clock.now += 1.1
        assert await cache.lookup("new-key") == Caller(7, "new")
        assert table.reads == 2

    asyncio.run(scenario())


def test_expired_keys_are_refused_without_a_reload(table: Table) -> None:
    table.keys[digest("short-lived")] = Caller(3, "short", expires_at=time.time() - 1)
    cache = KeyCache(ttl_s=5, miss_reload_s=1, clock=Clock())
    assert asyncio.run(cache.lookup("short-lived")) is None
    assert asyncio.run(cache.lookup("good-key")) is not None


def test_concurrent_requests_share_one_reload(table: Table) -> None:
    cache = KeyCache(ttl_s=5, miss_reload_s=1, clock=Clock())

    async def scenario() -> list[Caller | None]:
        return await asyncio.gather(*(cache.lookup("good-key") for _ in range(20)))

    assert all(asyncio.run(scenario()))
    assert table.reads == 1


def test_a_database_failure_keeps_the_keys_already_loaded(table: Table) -> None:
    clock = Clock()
    cache = KeyCache(ttl_s=5, miss_reload_s=1, clock=clock)

    async def scenario() -> None:
        assert await cache.lookup("good-key") is not None
        table.fail = True
        clock.now += 6
        assert await cache.lookup("good-key") is not None  # no exception, no 500
        assert await cache.lookup("other") is None

    asyncio.run(scenario())
