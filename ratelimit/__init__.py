"""Limits shared by every worker and machine: windowed budgets, leased concurrency slots, circuits.

Laid out like ``django.core.cache``: :func:`get_store` here gives the process's store, built from
the settings (Redis, with atomic Lua scripts, one round trip per check and the Redis clock for
every machine, when ``settings.REDIS_URL`` is set; in-process otherwise); the interface and the
backends are in :mod:`ratelimit.backends` (``base``, ``memory``, ``redis``). Each operation has a
sync form (worker threads) and an ``a``-prefixed async form (the event loop). The primitives and
why they are built this way: ``docs/DEPLOYMENT.md`` ("Limits across the cluster") and the
docstrings of :mod:`ratelimit.backends.base`, :mod:`ratelimit.windows`, :mod:`ratelimit.circuit`,
:mod:`ratelimit.failures` and :mod:`ratelimit.waiting`.
"""

import threading

from django.conf import settings

from ratelimit.backends.base import Slot, SlotClaim, Store, StoreUnavailable

__all__ = ["Slot", "SlotClaim", "Store", "StoreUnavailable", "build_store", "get_store"]

_store: Store | None = None
_store_lock = threading.Lock()


def get_store() -> Store:
    """The process's store, built on first use: Redis with ``settings.REDIS_URL``, else in-process."""
    global _store
    if _store is None:
        with _store_lock:
            if _store is None:
                _store = build_store(settings.REDIS_URL)
    return _store


def build_store(redis_url: str) -> Store:
    if redis_url:
        from ratelimit.backends.redis import RedisStore

        return RedisStore(redis_url)
    from ratelimit.backends.memory import MemoryStore

    return MemoryStore()
