"""Versions built into instances, per program and process: lazily, once, off the event loop, at
most ``server.max_loaded_versions`` per program (least recently used out; the start-up version is
the program's own instances and always stays).

A call that needs a version not built yet gets a :class:`PendingSource`: its lease waits (without
blocking the loop) for the one build of that version, run on a thread. A call holds its source
through its lease: a version dropped from the cache meanwhile still finishes the calls running on it.
"""

import asyncio
import contextlib
import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any

from django.db import connections

from programs.instances import InstanceSource, Lease
from programs.program import Program
from versions.live import VersionRef

logger = logging.getLogger(__name__)


class LoadedVersions:
    """One program's built versions."""

    def __init__(self, program: Program, loaded_sha256: str, limit: int) -> None:
        self.program = program
        self.loaded_sha256 = loaded_sha256  # the start-up state: served by program.instances
        self.limit = limit
        self._built: OrderedDict[str, InstanceSource] = OrderedDict()
        self._building: dict[str, Future[InstanceSource]] = {}
        self._lock = threading.Lock()

    def source(self, label: str, ref: VersionRef) -> InstanceSource:
        """The version's instances; on the request path: memory only."""
        if ref.state_sha256 == self.loaded_sha256:
            return self.program.instances
        built = self._built.get(label)
        if built is not None:
            with contextlib.suppress(KeyError):  # dropped by another thread now: it still serves this call
                self._built.move_to_end(label)
            return built
        return PendingSource(self, label, ref)

    def loaded(self) -> list[str]:
        return list(self._built)

    def build(self, label: str, ref: VersionRef) -> Future[InstanceSource]:
        """The one build of ``label`` in this process (started now on a thread if none is under way)."""
        with self._lock:
            if label in self._built:
                done: Future[InstanceSource] = Future()
                done.set_result(self._built[label])
                return done
            future = self._building.get(label)
            if future is not None:
                return future
            future = self._building[label] = Future()
        threading.Thread(
            target=self._build, args=(label, ref, future), name=f"version-{label}", daemon=True
        ).start()
        return future

    def warm(self, label: str, ref: VersionRef) -> None:
        """Build ``label`` now if needed and wait for it (the polling thread, after an alias move)."""
        if ref.state_sha256 != self.loaded_sha256 and label not in self._built:
            self.build(label, ref).result()

    def _build(self, label: str, ref: VersionRef, future: Future[InstanceSource]) -> None:
        from versions.models import Version

        try:
            state = Version.objects.values_list("state", flat=True).get(pk=ref.pk)
            source = self.program.instances_for(state)
        except BaseException as exc:
            logger.exception("%s %s: cannot build the version", self.program.name, label)
            with self._lock:
                self._building.pop(label, None)
            future.set_exception(exc)
            return
        finally:
            connections.close_all()  # this thread's connection: the thread ends here
        with self._lock:
            self._built[label] = source
            while len(self._built) > self.limit:
                dropped, _ = self._built.popitem(last=False)
                logger.info(
                    "%s: version %s unloaded (server.max_loaded_versions)", self.program.name, dropped
                )
            self._building.pop(label, None)
        future.set_result(source)


class PendingSource:
    """A version not built yet: its lease waits for the build, then leases from it."""

    def __init__(self, versions: LoadedVersions, label: str, ref: VersionRef) -> None:
        self.versions, self.label, self.ref = versions, label, ref

    def lease(self) -> Lease:
        return PendingLease(self)  # type: ignore[return-value]


class PendingLease:
    """``async with``: build (or wait for) the version, then enter its own lease."""

    __slots__ = ("_inner", "_pending")

    def __init__(self, pending: PendingSource) -> None:
        self._pending = pending
        self._inner: Any = None

    async def __aenter__(self) -> Lease:
        pending = self._pending
        source = await asyncio.wrap_future(pending.versions.build(pending.label, pending.ref))
        self._inner = source.lease()
        return await self._inner.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        if self._inner is not None:
            await self._inner.__aexit__(*exc)
