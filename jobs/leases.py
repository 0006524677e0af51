"""Leases in a ``jobworker``: renew this worker's, take back every worker's expired ones.

A thread beside the engine's loop: every third of ``JOBS_LEASE_S`` it renews the leases of the
chunk this worker runs (the heartbeat), and every ``JOBS_SWEEP_S`` it sweeps: items whose lease
expired (their worker was killed, or hung past its lease) go back to pending and their chunk is
queued again, in one transaction per chunk whose conditional update lets only one sweeper win. An
item that was *running* at the kill is called upstream once more (``attempts`` counts it).
"""

import logging
import threading
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connections, transaction
from django.utils import timezone

from jobs import engine, metrics
from jobs.models import ItemState, JobItem
from jobs.worker import JobWorker

logger = logging.getLogger(__name__)

HELD = (ItemState.LEASED, ItemState.RUNNING)
SWEEP_CHUNKS = 100  # chunks taken back per sweep at most


def renew(worker: JobWorker) -> int:
    current = worker.current
    if current is None:
        return 0
    job_id, chunk = current
    expiry = timezone.now() + timedelta(seconds=settings.JOBS_LEASE_S)
    return JobItem.objects.filter(job_id=job_id, chunk=chunk, lease_owner=worker.id, state__in=HELD).update(
        lease_expires=expiry
    )


def sweep() -> int:
    """Queue again the chunks whose leases expired; returns the items taken back."""
    now = timezone.now()
    expired = JobItem.objects.filter(state__in=HELD, lease_expires__lt=now)
    chunks = expired.values_list("job_id", "chunk").order_by("job_id", "chunk").distinct()[:SWEEP_CHUNKS]
    taken = 0
    for job_id, chunk in list(chunks):
        with transaction.atomic():
            count = expired.filter(job_id=job_id, chunk=chunk).update(
                state=ItemState.PENDING, lease_owner="", lease_expires=None
            )
            if count:
                engine.submit("run_chunk", str(job_id), chunk)
        if count:
            metrics.RECLAIMED.inc(count)
            logger.warning("job %s chunk %s: %d items of a lost worker queued again", job_id, chunk, count)
        taken += count
    return taken


class LeaseKeeper(threading.Thread):
    def __init__(self, worker: JobWorker) -> None:
        super().__init__(name="jobs-leases", daemon=True)
        self.worker = worker
        self.stopped = threading.Event()

    def run(self) -> None:
        beat = settings.JOBS_LEASE_S / 3
        since_sweep = settings.JOBS_SWEEP_S  # sweep at once: a restarted fleet takes back its items
        while not self.stopped.is_set():
            close_old_connections()
            try:
                renew(self.worker)
                if since_sweep >= settings.JOBS_SWEEP_S:
                    since_sweep = 0.0
                    sweep()
                    metrics.QUEUE_DEPTH.set(engine.queued())
            except Exception:
                logger.exception("jobs: lease renewal or sweep failed; trying again")
            self.stopped.wait(min(beat, settings.JOBS_SWEEP_S))
            since_sweep += min(beat, settings.JOBS_SWEEP_S)
        connections.close_all()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)
