"""The per-process scheduler: one asyncio task per cron job, each fire time claimed in the database.

Every process that serves the project (gunicorn workers, other machines on the same database) runs
this loop. When a fire time comes, each one tries to insert the run's row; the unique constraint
lets exactly one insert win, and only that process runs the job. A process claims fire times from
the moment it started, so a tick missed while every process was down is skipped, not made up. A
process runs one run of a job at a time (dspy-cli's ``max_instances=1``): fire times that pass
meanwhile are left to the other processes. The database work runs in a thread, never on the loop.

Started and stopped by the ASGI lifespan (dspysite/asgi.py); ``DSPY_SCHEDULER=off`` keeps a
process out of it, for deployments that run the jobs on dedicated machines.
"""

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable
from datetime import datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from programs.runtime import Runtime
from scheduling import services
from scheduling.jobs import CronJob, JobError, cron_jobs
from scheduling.models import CronRun
from scheduling.runner import RunReport, run_job
from scheduling.schedules import Clock

logger = logging.getLogger(__name__)

claim = sync_to_async(services.cron_run_claim, thread_sensitive=False)
finish = sync_to_async(services.cron_run_finish, thread_sensitive=False)


class Scheduler:
    def __init__(
        self,
        jobs: list[CronJob],
        *,
        enabled: bool,
        clock: Clock,
        draining: Callable[[], bool],
        shutdown_s: float,
    ) -> None:
        self.jobs = jobs
        self.enabled = enabled
        self.clock = clock
        self._draining = draining  # SIGTERM received: claim nothing more, start no new item
        self.shutdown_s = shutdown_s
        self.worker = ""
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Lifespan start-up: a task per job (after the gateways' ``setup()``)."""
        if not self.jobs:
            return
        if not self.enabled:
            logger.info(
                "Scheduler off (DSPY_SCHEDULER): %d cron job(s) left to other processes", len(self.jobs)
            )
            return
        self.worker = f"{socket.gethostname()}:{os.getpid()}"[:100]  # after gunicorn's fork
        for job in self.jobs:
            limit = f", max_errors={job.max_errors}" if job.max_errors else ""
            logger.info("Cron job %s: schedule %r, %d item(s) at a time%s", job.id, job.schedule.expression,
                        job.concurrency, limit)  # fmt: skip
            self._tasks.append(asyncio.create_task(self._loop(job), name=f"cron {job.id}"))

    async def stop(self) -> None:
        """Lifespan shutdown: runs in progress start no new item and get ``shutdown_s`` to finish;
        the rest are cancelled and recorded as interrupted."""
        self._stopping.set()
        if not self._tasks:
            return
        _, late = await asyncio.wait(self._tasks, timeout=self.shutdown_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def stopping(self) -> bool:
        return self._stopping.is_set() or self._draining()

    async def _loop(self, job: CronJob) -> None:
        moment = self.clock.now()
        while True:
            moment = job.schedule.next_after(moment)
            if not await self._sleep_until(moment) or self.stopping():
                return
            try:
                run = await claim(job=job.id, fire_time=moment, worker=self.worker)
            except DatabaseError:
                # Without the claim nobody knows whether another process runs it: skip the fire time.
                logger.exception("Cron job %s: cannot claim %s; skipped", job.id, moment.isoformat())
                continue
            if run is not None:
                await self._run(job, run)
                moment = max(moment, self.clock.now())  # fire times passed meanwhile: other processes'

    async def _sleep_until(self, moment: datetime) -> bool:
        """Wait until the clock shows ``moment``; False if the scheduler is stopped first."""
        while (delay := self.clock.seconds_until(moment)) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return False
        return True

    async def _run(self, job: CronJob, run: CronRun) -> None:
        report = RunReport()
        logger.info("Cron job %s: run %d for %s", job.id, run.pk, run.fire_time.isoformat())
        try:
            await run_job(job, run.pk, report, self.stopping)
        except asyncio.CancelledError:
            report.interrupted = True
            report.stopped = report.stopped or f"cancelled at shutdown after {self.shutdown_s:g} s"
            raise
        except Exception as exc:  # a bug: recorded on the run, the job keeps its schedule
            logger.exception("Cron job %s: run %d failed", job.id, run.pk)
            report.stopped = f"{type(exc).__name__}: {exc}"
        finally:
            await self._record(job, run, report)

    async def _record(self, job: CronJob, run: CronRun, report: RunReport) -> None:
        logger.info("Cron job %s: run %d %s: %d item(s), %d ok, %d failed", job.id, run.pk, report.status,
                    report.items, report.ok, report.failed)  # fmt: skip
        try:
            await finish(run, status=report.status, items=report.items, ok=report.ok, failed=report.failed,
                         error=report.error)  # fmt: skip
        except DatabaseError:
            logger.exception("Cron job %s: run %d could not be recorded", job.id, run.pk)


def build_scheduler_or_exit(runtime: Runtime) -> Scheduler:
    """The process's scheduler over the runtime's cron jobs; a bad job is one line, then exit 2."""
    try:
        jobs = cron_jobs(runtime.programs.values(), timezone.get_default_timezone())
        clock = _clock()
    except JobError as exc:
        sys.stderr.write(f"dspy-django: cannot start: {exc}\n")
        raise SystemExit(2) from None
    return Scheduler(
        jobs,
        enabled=settings.DSPY_SCHEDULER,
        clock=clock,
        draining=lambda: runtime.draining,
        shutdown_s=settings.DSPY_SCHEDULER_SHUTDOWN_TIMEOUT_S,
    )


def _clock() -> Clock:
    scale, origin = settings.DSPY_SCHEDULER_TIME_SCALE, settings.DSPY_SCHEDULER_TIME_ORIGIN
    if scale <= 0 or (scale != 1 and not origin):
        raise JobError(
            "DSPY_SCHEDULER_TIME_SCALE (tests only) must be > 0 and needs DSPY_SCHEDULER_TIME_ORIGIN"
        )
    return Clock(scale, origin)
