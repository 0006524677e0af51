"""The API key a job runs as: its quotas, and the name on each item's log row.

Read from the database (one query, cached a few seconds per worker): a key revoked while its
job runs stops the job's next items (401 each) within the cache's life.
"""

import time

from apikeys.auth import CACHE_TTL_S, active_keys
from apikeys.context import Caller

_cache: tuple[float, dict[int, Caller]] = (float("-inf"), {})


def caller_for(key_id: int) -> Caller | None:
    """The active key ``key_id`` as a caller (None: revoked, expired or deleted)."""
    global _cache
    loaded_at, callers = _cache
    if time.monotonic() - loaded_at > CACHE_TTL_S:
        callers = {caller.key_id: caller for caller in active_keys().values() if caller.key_id is not None}
        _cache = (time.monotonic(), callers)
    return callers.get(key_id)
