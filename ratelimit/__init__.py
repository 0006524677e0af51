"""Limits shared by every worker and machine: windowed budgets, leased concurrency slots, circuits.

:func:`ratelimit.store.get_store` gives the process's store: Redis (atomic Lua scripts, one round
trip per check, the Redis clock for every machine) when ``settings.REDIS_URL`` is set, in-process
otherwise. Each operation has a sync form (worker threads) and an ``a``-prefixed async form (the
event loop). The primitives and why they are built this way: ``docs/DEPLOYMENT.md`` ("Limits across
the cluster") and the docstrings of :mod:`ratelimit.store`, :mod:`ratelimit.windows`,
:mod:`ratelimit.circuit`, :mod:`ratelimit.failures` and :mod:`ratelimit.waiting`.
"""
