"""The one door to the task engine: submit, cancel, status. Nothing else imports the engine.

The engine is Django's Tasks API (the ``django-tasks`` backport) with ``django-tasks-db``'s
database backend (docs/JOBS.md says why, with the numbers). It only moves work: a task names a
job's chunk, and the chunk's items, their leases and results are in our tables (:mod:`jobs.models`).
So the engine can change (an RQ backend, Celery) by rewriting this module and ``jobworker``.
An enqueue joins the caller's transaction: a chunk is queued exactly when its items are committed.
"""

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from jobs import tasks

TASKS: dict[str, Any] = {
    "run_chunk": tasks.run_chunk,
    "run_background": tasks.run_background,
    "deliver_webhook": tasks.deliver_webhook,
    "run_function": tasks.run_function,
}


def submit(name: str, *args: Any) -> str:
    """Queue task ``name`` with ``args`` (JSON values); returns the engine's task id."""
    return str(TASKS[name].enqueue(*args).id)


def submit_function(function: Callable[..., Any], *args: Any) -> str:
    """Queue a call of ``function`` (a module-level function of this project; a coroutine function
    runs on the worker's event loop) with ``args`` (JSON values): how another app runs its slow work
    on the workers without a queue of its own. Returns the engine's task id."""
    return submit("run_function", f"{function.__module__}:{function.__qualname__}", *args)


def submit_later(delay_s: float, name: str, *args: Any) -> str:
    """Queue task ``name`` to run no sooner than ``delay_s`` from now (a webhook's retry)."""
    run_after = timezone.now() + timedelta(seconds=delay_s)
    return str(TASKS[name].using(run_after=run_after).enqueue(*args).id)


def cancel(task_id: str) -> bool:
    """Drop a task that has not started (True); a started one runs on (its items check the job)."""
    deleted, _ = DBTaskResult.objects.filter(id=task_id, status="READY").delete()
    return bool(deleted)


def status(task_id: str) -> str:
    """The engine's word for a task: READY, RUNNING, SUCCESSFUL, FAILED (or MISSING)."""
    row = DBTaskResult.objects.filter(id=task_id).values_list("status", flat=True).first()
    return row or "MISSING"


def queued() -> int:
    """Tasks waiting for a worker (the Prometheus queue depth)."""
    return DBTaskResult.objects.filter(status="READY").count()


def prune(before: datetime) -> int:
    """Forget finished engine tasks older than ``before`` (our tables keep what users see)."""
    done = DBTaskResult.objects.filter(status__in=("SUCCESSFUL", "FAILED"), finished_at__lt=before)
    deleted, _ = done.delete()
    return deleted
