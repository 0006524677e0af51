"""The engine's tasks: thin, they hand over to :mod:`jobs.runner` (our tables hold the state)."""

from django_tasks import task


@task()
def run_chunk(job_id: str, chunk: int) -> None:
    """Run the unfinished items of one chunk of a job (in a ``jobworker`` process)."""
    from jobs.runner import run_chunk as run

    run(job_id, chunk)
