"""Writes of the scheduler: claim a fire time, record how the run ended.

Plain sync ORM functions; the scheduler calls them in a thread (``sync_to_async``), never on the
event loop. Each gives its connection back when done (to psycopg's pool on PostgreSQL), so the
scheduler holds none between runs.
"""

from datetime import datetime

from django.db import IntegrityError, connection
from django.utils import timezone

from scheduling.models import CronRun

ERROR_MAX = 4000


def cron_run_claim(*, job: str, fire_time: datetime, worker: str) -> CronRun | None:
    """The new run if this process won ``(job, fire_time)``, None if another process did.

    Any other database error propagates: without the claim nobody may run the job.
    """
    try:
        return CronRun.objects.create(job=job, fire_time=fire_time, worker=worker, started_at=timezone.now())
    except IntegrityError:
        return None
    finally:
        connection.close()


def cron_run_finish(run: CronRun, *, status: str, items: int, ok: int, failed: int, error: str = "") -> None:
    finished_at = timezone.now()
    try:
        CronRun.objects.filter(pk=run.pk).update(
            status=status,
            items=items,
            ok=ok,
            failed=failed,
            error=error[:ERROR_MAX],
            finished_at=finished_at,
            duration_ms=(finished_at - run.started_at).total_seconds() * 1000,
        )
    finally:
        connection.close()
