"""A ``jobworker`` process's own state: its id, its event loop, its leases, whether it drains.

The engine's worker loop runs tasks one at a time on the main thread; a chunk's items run
concurrently on one event loop that lives as long as the process (:meth:`JobWorker.run`), so the
programs' LM connection pools are built once, as in a server. Beside it, a thread renews this
worker's leases (the heartbeat) and sweeps every worker's expired ones (:mod:`jobs.leases`).
"""

import asyncio
import os
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import connections

T = TypeVar("T")


class JobWorker:
    def __init__(self, concurrency: int = 8) -> None:
        self.id = f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.concurrency = concurrency
        self.draining = False  # SIGTERM: no new item starts; running ones finish
        self.current: tuple[str, int] | None = None  # the (job, chunk) whose leases the heartbeat renews
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="jobs-loop", daemon=True)
        # The ORM off the loop: its own threads, each closing its connections when the process ends.
        self.db_threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="jobs-db")

    def start(self, on_startup: list[Callable[[], Awaitable[None]]]) -> None:
        self._thread.start()
        for hook in on_startup:
            self.run(hook())

    def stop(self, on_shutdown: list[Callable[[], Awaitable[None]]]) -> None:
        for hook in on_shutdown:
            self.run(hook())
        self.db_threads.submit(connections.close_all).result()
        self.db_threads.shutdown(wait=True)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the worker's loop and wait for it (from a sync thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def db(self, function: Callable[..., T]) -> Callable[..., Awaitable[T]]:
        """``function`` (ORM work) as a coroutine running on the worker's database threads."""
        return sync_to_async(function, thread_sensitive=False, executor=self.db_threads)


_worker: JobWorker | None = None


def current_worker() -> JobWorker:
    """This process's worker (a process that runs chunks outside ``jobworker``, a test, gets one)."""
    global _worker
    if _worker is None:
        _worker = JobWorker()
        _worker.start([])
    return _worker


def install_worker(worker: JobWorker) -> None:
    global _worker
    _worker = worker
