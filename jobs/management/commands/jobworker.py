"""``manage.py jobworker [--concurrency N]``: run job chunks until SIGTERM (docs/JOBS.md).

The engine's own worker loop (``django-tasks-db``'s, one task at a time on the main thread) with
the programs loaded as the server loads them, telemetry and tracing started, and a lease keeper
beside it. SIGTERM (or Ctrl+C) drains: no new item starts, the running ones finish and are
stored, the chunk's unstarted items go back to the queue, then the process exits; a second
signal exits at once (its items are taken back by a sweep).
"""

import signal
from argparse import ArgumentParser
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand
from django.db import connections
from django_tasks_db.management.commands.db_worker import Worker

from jobs import metrics
from jobs.leases import LeaseKeeper
from jobs.worker import JobWorker, install_worker


class DrainingWorker(Worker):
    """The engine's worker, whose first SIGTERM also tells the running chunk to start no item."""

    def __init__(self, job_worker: JobWorker, **options: Any) -> None:
        super().__init__(**options)
        self.job_worker = job_worker

    def shutdown(self, signum: int, frame: FrameType | None) -> None:
        self.job_worker.draining = True
        super().shutdown(signum, frame)


# Threads of a worker that hold a database connection at once: the engine's loop (the chunk's
# claim), two ORM threads (each item's start and result), the lease keeper, the telemetry writer.
WORKER_CONNECTIONS = 6


def _pool_for_worker_threads() -> None:
    """PostgreSQL's pool (``DB_POOL_MAX_SIZE``, 4 by default for a server) at least as large as the
    threads that use it here, before the first connection builds it (loadtest/jobs_bench.py, 3,000
    items, 1 worker, 50 ms mock: 36 items/s with the server's 4, 58 with 6)."""
    pool = connections.settings["default"].get("OPTIONS", {}).get("pool")
    if isinstance(pool, dict):
        pool["max_size"] = max(int(pool.get("max_size", 0)), WORKER_CONNECTIONS)


class Command(BaseCommand):
    help = "Run batch-job chunks (the web processes never do): drains on SIGTERM"

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--concurrency", type=int, default=8, help="items run at once (default 8)")
        parser.add_argument(
            "--metrics-port", type=int, default=0, help="serve Prometheus /metrics on this port (0: off)"
        )
        parser.add_argument(
            "--interval",
            type=float,
            default=0.5,
            help="seconds between polls of an empty queue (default 0.5)",
        )

    def handle(self, *, concurrency: int, interval: float, metrics_port: int, **options: Any) -> None:
        from loop.lifecycle import loop_shutdown, loop_startup
        from programs.runtime import get_runtime_or_exit
        from telemetry.lifecycle import telemetry_shutdown, telemetry_startup
        from telemetry.tracing import tracing_shutdown, tracing_startup
        from versions.lifecycle import versions_shutdown, versions_startup

        _pool_for_worker_threads()
        runtime = get_runtime_or_exit()  # the programs, loaded as the server loads them
        job_worker = JobWorker(max(1, concurrency))
        install_worker(job_worker)
        # The server's hooks for a process that calls programs (dspysite/application.py): spans, the
        # log writer, the version registry (a job's version and alias moves) and the trace writer.
        job_worker.start([tracing_startup, telemetry_startup, versions_startup, loop_startup])
        if metrics_port:
            metrics.serve(metrics_port)
        keeper = LeaseKeeper(job_worker)
        keeper.start()
        engine_worker = DrainingWorker(
            job_worker,
            queue_names=["default"],
            interval=interval,
            batch=False,
            backend_name="default",
            startup_delay=False,
            max_tasks=None,
            worker_id=job_worker.id[:64],
            excluded_queue_names=[],
        )
        engine_worker.configure_signals()
        self.stdout.write(f"jobworker {job_worker.id}: concurrency {job_worker.concurrency}", ending="\n")
        self.stdout.flush()
        try:
            engine_worker.run()
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            keeper.stop()
            job_worker.stop(
                [versions_shutdown, runtime.aclose, telemetry_shutdown, loop_shutdown, tracing_shutdown]
            )
