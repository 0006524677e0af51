"""The engine's tasks: thin, they hand over to :mod:`jobs.runner` (our tables hold the state)."""

from typing import Any

from django_tasks import task


@task()
def run_chunk(job_id: str, chunk: int) -> None:
    """Run the unfinished items of one chunk of a job (in a ``jobworker`` process)."""
    from jobs.runner import run_chunk as run

    run(job_id, chunk)


@task()
def run_background(run_id: str) -> None:
    """One background run's program call, then its webhook."""
    from jobs.runs import run_background as run

    run(run_id)


@task()
def deliver_webhook(run_id: str, attempt: int) -> None:
    """One attempt at a run's webhook (the next one queued with backoff if it fails)."""
    from jobs.webhooks import deliver

    deliver(run_id, attempt)


@task()
def run_function(path: str, *args: Any) -> None:
    """Another app's background work (an evaluation, an optimization): ``module:name`` called with
    ``args`` in a ``jobworker`` (:func:`jobs.engine.submit_function`)."""
    from jobs.functions import run_function as run

    run(path, args)
