"""Start-up (every worker, from the ASGI lifespan): register the state each program loaded (the
first one becomes ``production``), read the registry, hand the resolver each program's built
versions, and start polling for changes. A database without the registry's tables (not migrated)
leaves the programs unversioned, as before, with a warning."""

import contextlib
import logging

from asgiref.sync import sync_to_async
from django.db import DatabaseError, connections

from programs.runtime import get_runtime
from versions import live
from versions.loaded import LoadedVersions
from versions.registry import register_loaded
from versions.resolver import resolver
from versions.states import loaded_state, sha256_json

logger = logging.getLogger(__name__)


def start() -> None:
    runtime = get_runtime()
    limit = runtime.config.config.server.max_loaded_versions
    try:
        for program in runtime.programs.values():
            register_loaded(program)
            loaded = LoadedVersions(program, sha256_json(loaded_state(program)), limit)
            resolver.loaded[program.name] = loaded
        live.refresh(force=True)
    except DatabaseError:
        logger.warning(
            "versions: the registry is not available (run manage.py migrate); programs are unversioned"
        )
        resolver.loaded.clear()
        return
    finally:
        connections.close_all()
    live._on_refresh.append(_warm)
    live.start_polling()


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
