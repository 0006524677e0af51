"""Every worker's view of the registry, in memory, refreshed off the request path.

A daemon thread polls the registry's change counter (the highest version id and alias-history id,
one cheap query) every ``VERSIONS_POLL_S`` (default 0.5 s) and, when it moved, reads the versions
and aliases again and swaps in a new immutable :class:`Registry`: a call reads one global, never
the database. Works alike on SQLite and PostgreSQL, with or without Redis. A write in this process
refreshes at once (:func:`changed`). The poll also builds the versions the aliases run, so a
promoted version is warm before its first call.
"""

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import connection, connections

from versions.routing import Route, compile_route

logger = logging.getLogger(__name__)

POLL_S = float(os.environ.get("VERSIONS_POLL_S", "0.5"))


@dataclass(frozen=True, slots=True)
class VersionRef:
    pk: int
    state_sha256: str


@dataclass(frozen=True)
class Registry:
    generation: tuple[int, int] = (-1, -1)
    versions: dict[str, dict[str, VersionRef]] = field(default_factory=dict)  # program -> label -> ref
    routes: dict[str, dict[str, Route]] = field(default_factory=dict)  # program -> alias -> route
    targets: dict[str, dict[str, dict]] = field(default_factory=dict)  # program -> alias -> target


current = Registry()
_refresh_lock = threading.Lock()
_poller: threading.Thread | None = None
_stop = threading.Event()
_on_refresh: list = []  # callables(registry) run in the polling thread after a swap (warming)
_pending: list = []  # start-up work that failed (database down): retried by the poller until done


def generation() -> tuple[int, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM versions_version),"
            " (SELECT COALESCE(MAX(id), 0) FROM versions_aliashistory)"
        )
        versions, moves = cursor.fetchone()
    return int(versions), int(moves)


def refresh(force: bool = False) -> Registry:
    """Read the registry again if its counter moved (or ``force``); returns the view in use."""
    global current
    from versions.models import Alias, Version

    with _refresh_lock:
        seen = generation()
        if seen == current.generation and not force:
            return current
        versions: dict[str, dict[str, VersionRef]] = {}
        for pk, program, number, sha in Version.objects.values_list(
            "pk", "program", "number", "state_sha256"
        ):
            versions.setdefault(program, {})[f"v{number}"] = VersionRef(pk, sha)
        routes: dict[str, dict[str, Route]] = {}
        targets: dict[str, dict[str, dict]] = {}
        for program, name, target in Alias.objects.values_list("program", "name", "target"):
            routes.setdefault(program, {})[name] = compile_route(target)
            targets.setdefault(program, {})[name] = target
        current = Registry(seen, versions, routes, targets)
    for hook in _on_refresh:
        try:
            hook(current)
        except Exception:
            logger.exception("versions: refresh hook failed")
    return current


def changed() -> None:
    """A write of this process: its own view follows at once (when it keeps one)."""
    if _poller is not None:
        refresh()


def retry_until_done(work: Callable[[], None]) -> None:
    """Have the polling thread call ``work`` before each poll until it returns without raising."""
    _pending.append(work)


def _retry_pending() -> None:
    while _pending:
        _pending[0]()
        _pending.pop(0)
        logger.info("versions: the registry is available again; programs are versioned")


def start_polling() -> None:
    """Start this process's polling thread (idempotent)."""
    global _poller
    if _poller is not None:
        return
    _stop.clear()
    _poller = threading.Thread(target=_poll, name="versions-live", daemon=True)
    _poller.start()


def stop_polling() -> None:
    global _poller
    _stop.set()
    if _poller is not None:
        _poller.join(timeout=5)
    _poller = None


def _poll() -> None:
    while not _stop.wait(POLL_S):
        try:
            _retry_pending()
            refresh()
        except Exception:
            logger.warning(
                "versions: cannot read the registry; serving the last known versions", exc_info=True
            )
            connections.close_all()
