"""The Redis store: each operation is one Lua script, so one round trip and atomic across machines.

Time is the Redis server's (``TIME`` inside the scripts): replicas whose clocks disagree still
share one window. The sync client serves worker threads (its pool is thread-safe), one async client
per event loop serves the loop (redis-py's asyncio connections belong to the loop that made them).

A failure (Redis stopped, a timeout) raises :class:`~ratelimit.backends.base.StoreUnavailable` after one
immediate retry on a fresh connection (a connection broken by a Redis restart fails once), within
``RATELIMIT_REDIS_TIMEOUT_S`` (default 0.5 s) per attempt; the next call reconnects by itself, so
limits work again as soon as Redis is back. The first failure of an incident is logged, and the
first success after it (:mod:`ratelimit.failures`).
"""

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from dspysite.env import env_float, env_str
from ratelimit import failures
from ratelimit.backends.base import Slot, SlotClaim, Store, StoreUnavailable
from ratelimit.circuit import CircuitCheck
from ratelimit.windows import BUCKETS, EPSILON, Charge, Decision, Reservation

T = TypeVar("T")

TIMEOUT_S = env_float("RATELIMIT_REDIS_TIMEOUT_S", 0.5)
KEY_PREFIX = env_str("RATELIMIT_KEY_PREFIX", "dspy:rl:")
CIRCUIT_TTL_S = 86400  # a circuit untouched for a day is forgotten (closed)
_SCRIPTS = {
    name: (Path(__file__).parent / "lua" / f"{name}.lua").read_text()
    for name in ("take", "settle", "acquire", "circuit_check", "circuit_record")
}


def _client_options() -> dict[str, Any]:
    return {"socket_timeout": TIMEOUT_S, "socket_connect_timeout": TIMEOUT_S, "health_check_interval": 0}


class RedisStore(Store):
    def __init__(self, url: str, prefix: str = KEY_PREFIX) -> None:
        self.url = url
        self.prefix = prefix  # before every key: servers sharing a Redis for other uses stay apart
        self._sync = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 1), **_client_options())
        self._sync_scripts = {name: self._sync.register_script(text) for name, text in _SCRIPTS.items()}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async: redis.asyncio.Redis | None = None
        self._async_scripts: dict[str, Any] = {}

    def _client(self) -> tuple["redis.asyncio.Redis", dict[str, Any]]:
        """The running loop's async client and scripts (a new loop gets a new client)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._async is None:
            client = redis.asyncio.Redis.from_url(
                self.url, retry=AsyncRetry(NoBackoff(), 1), **_client_options()
            )
            self._async_scripts = {name: client.register_script(text) for name, text in _SCRIPTS.items()}
            self._async, self._loop = client, loop
        return self._async, self._async_scripts

    def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return _call(lambda: self._sync_scripts[name](keys=keys, args=args))

    async def _arun(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await _acall(lambda: self._client()[1][name](keys=keys, args=args))

    # Each operation: its script's arguments, then the reply's parsing, shared by both forms.

    def take_all(self, charges: Sequence[Charge]) -> list[Decision]:
        return _decisions(charges, self._run("take", *_take_args(self.prefix, charges)))

    async def atake_all(self, charges: Sequence[Charge]) -> list[Decision]:
        return _decisions(charges, await self._arun("take", *_take_args(self.prefix, charges)))

    def take_with_slot(self, charges: Sequence[Charge], claim: SlotClaim) -> tuple[list[Decision], Slot]:
        lease_id = secrets.token_hex(8)
        reply = self._run("take", *_take_args(self.prefix, charges, claim, lease_id))
        return _decisions(charges, reply[:-1]), _slot(reply[-1], lease_id)

    async def atake_with_slot(
        self, charges: Sequence[Charge], claim: SlotClaim
    ) -> tuple[list[Decision], Slot]:
        lease_id = secrets.token_hex(8)
        reply = await self._arun("take", *_take_args(self.prefix, charges, claim, lease_id))
        return _decisions(charges, reply[:-1]), _slot(reply[-1], lease_id)

    def settle_all(self, settlements: Sequence[tuple[Reservation, float]]) -> None:
        if settlements:
            self._run("settle", *_settle_args(self.prefix, settlements))

    async def asettle_all(self, settlements: Sequence[tuple[Reservation, float]]) -> None:
        if settlements:
            await self._arun("settle", *_settle_args(self.prefix, settlements))

    def acquire(self, key: str, limit: int, lease_s: float) -> Slot:
        lease_id = secrets.token_hex(8)
        return _slot(self._run("acquire", [self.prefix + key], [limit, lease_s, lease_id]), lease_id)

    async def aacquire(self, key: str, limit: int, lease_s: float) -> Slot:
        lease_id = secrets.token_hex(8)
        return _slot(await self._arun("acquire", [self.prefix + key], [limit, lease_s, lease_id]), lease_id)

    def release(self, key: str, lease_id: str) -> None:
        _call(lambda: self._sync.zrem(self.prefix + key, lease_id))

    async def arelease(self, key: str, lease_id: str) -> None:
        await _acall(lambda: self._client()[0].zrem(self.prefix + key, lease_id))

    def circuit_check(self, key: str, trial_lease_s: float) -> CircuitCheck:
        return _circuit_check(self._run("circuit_check", [self.prefix + key], [trial_lease_s]))

    async def acircuit_check(self, key: str, trial_lease_s: float) -> CircuitCheck:
        return _circuit_check(await self._arun("circuit_check", [self.prefix + key], [trial_lease_s]))

    def circuit_record(self, key: str, ok: bool, failures: int, cooldown_s: float) -> bool:
        args = [int(ok), failures, cooldown_s, CIRCUIT_TTL_S]
        return self._run("circuit_record", [self.prefix + key], args) == 1

    async def acircuit_record(self, key: str, ok: bool, failures: int, cooldown_s: float) -> bool:
        args = [int(ok), failures, cooldown_s, CIRCUIT_TTL_S]
        return await self._arun("circuit_record", [self.prefix + key], args) == 1


def _call(command: Callable[[], T]) -> T:
    try:
        result = command()
    except (redis.RedisError, OSError) as exc:
        raise _unavailable(exc) from exc
    failures.store_answered()
    return result


async def _acall(command: Callable[[], Awaitable[T]]) -> T:
    try:
        result = await command()
    except (redis.RedisError, OSError) as exc:
        raise _unavailable(exc) from exc
    failures.store_answered()
    return result


def _unavailable(exc: BaseException) -> StoreUnavailable:
    error = StoreUnavailable(f"Redis: {type(exc).__name__}: {exc}")
    failures.store_failed(error)
    return error


def _take_args(
    prefix: str, charges: Sequence[Charge], claim: SlotClaim | None = None, lease_id: str = ""
) -> tuple[list[str], list[Any]]:
    keys = [prefix + charge.key for charge in charges]
    args: list[Any] = [BUCKETS, EPSILON, 0, 0, ""]
    if claim is not None:
        keys.append(prefix + claim.key)
        args[2:] = [claim.limit, repr(float(claim.lease_s)), lease_id]
    for charge in charges:
        args += [repr(float(charge.amount)), repr(float(charge.limit)), repr(float(charge.window_s))]
    return keys, args


def _settle_args(
    prefix: str, settlements: Sequence[tuple[Reservation, float]]
) -> tuple[list[str], list[Any]]:
    keys = [prefix + reservation.key for reservation, _ in settlements]
    args: list[Any] = [BUCKETS, EPSILON]
    for reservation, actual in settlements:
        args += [
            reservation.bucket,
            repr(float(actual) - reservation.amount),
            repr(float(reservation.window_s)),
        ]
    return keys, args


def _decisions(charges: Sequence[Charge], reply: list[Any]) -> list[Decision]:
    decisions = []
    for charge, (charged, remaining, reset_s, retry_after_s, bucket) in zip(charges, reply, strict=True):
        reservation = (
            Reservation(charge.key, int(bucket), float(charge.amount), charge.window_s)
            if charged == 1
            else None
        )
        decisions.append(
            Decision(charged == 1, float(remaining), float(reset_s), float(retry_after_s), reservation)
        )
    return decisions


def _slot(reply: list[Any], lease_id: str) -> Slot:
    acquired, remaining = reply
    return Slot(True, int(remaining), lease_id) if acquired == 1 else Slot(False, int(remaining))


def _circuit_check(reply: list[Any]) -> CircuitCheck:
    allowed, state, retry_after_s, failures = reply
    return CircuitCheck(allowed == 1, _text(state), float(retry_after_s), int(failures))  # type: ignore[arg-type]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
