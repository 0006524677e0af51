"""Start-up (every worker, from the ASGI lifespan): register the state each program loaded (the
first one becomes ``production``), read the registry, hand the resolver each program's built
versions, and start polling for changes. A database that cannot answer then (down, or without the
registry's tables) leaves the programs unversioned, with a warning, until the poller's retry
succeeds."""

import contextlib
import logging
import os
import time

from asgiref.sync import sync_to_async
from django.db import DatabaseError, OperationalError, connections

from programs.runtime import get_runtime
from versions import live
from versions.loaded import LoadedVersions
from versions.registry import register_loaded
from versions.resolver import resolver
from versions.states import loaded_state, sha256_json

logger = logging.getLogger(__name__)

# How long start-up retries a registry that fails with an operational error before it serves the
# programs unversioned (and the poller keeps retrying).
START_PATIENCE_S = float(os.environ.get("VERSIONS_START_PATIENCE_S", "10"))


def start() -> None:
    """Register and read the registry now; if the database cannot answer, the poller retries
    until it can (the programs serve unversioned meanwhile), so no restart is needed."""
    live._on_refresh.append(_warm)
    try:
        _register_with_patience()
    except DatabaseError as exc:
        logger.warning(
            "versions: the registry is not available (%s: database down or not migrated: manage.py"
            " migrate); programs are unversioned until it is, retrying",
            exc,
        )
        resolver.loaded.clear()
        live.retry_until_done(_register_all)
    finally:
        connections.close_all()
    live.start_polling()


def _register_with_patience(patience_s: float = START_PATIENCE_S) -> None:
    """:func:`_register_all`, tried again for ``patience_s`` on an operational error (a SQLite
    database locked by another process starting beside this one, a PostgreSQL restart): a server
    that answers before its registry is read answers unversioned, so it waits that long first."""
    deadline = time.monotonic() + patience_s
    delay_s = 0.05
    while True:
        try:
            _register_all()
            return
        except OperationalError:
            if time.monotonic() + delay_s > deadline:
                raise
            connections.close_all()
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 1.0)


def _register_all() -> None:
    """Each program's loaded state registered (the first becomes ``production``), then the view read."""
    runtime = get_runtime()
    limit = runtime.config.config.server.max_loaded_versions
    loaded: dict[str, LoadedVersions] = {}
    for program in runtime.programs.values():
        register_loaded(program)
        loaded[program.name] = LoadedVersions(program, sha256_json(loaded_state(program)), limit)
    resolver.loaded.update(loaded)
    live.refresh(force=True)


def _warm(registry: live.Registry) -> None:
    """Build the versions the aliases run before their first call (in the polling thread)."""
    for program, routes in registry.routes.items():
        loaded = resolver.loaded.get(program)
        versions = registry.versions.get(program, {})
        if loaded is None:
            continue
        for route in routes.values():
            for label in (*route.versions, route.shadow):
                if label in versions:
                    with contextlib.suppress(Exception):  # logged by the build; a call will try again
                        loaded.warm(label, versions[label])


async def versions_startup() -> None:
    await sync_to_async(start, thread_sensitive=False)()


async def versions_shutdown() -> None:
    await sync_to_async(live.stop_polling, thread_sensitive=False)()
