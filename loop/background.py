"""Where an evaluation or an optimization runs: on a job worker (``manage.py jobworker``, docs/JOBS.md),
never in the web process that accepted it. Each is one engine task calling
:func:`loop.evaluation.evaluation_run` / :func:`loop.optimization.optimization_run` with the row's
id; the row holds the state users see. Queued in the transaction that created the row (the engine's
enqueue joins it), so a worker never looks for a row that is not committed.
"""

from jobs import engine
from loop.evaluation import evaluation_run
from loop.optimization import optimization_run


def start_evaluation(evaluation_id: int) -> None:
    engine.submit_function(evaluation_run, evaluation_id)


def start_optimization(optimization_id: int) -> None:
    engine.submit_function(optimization_run, optimization_id)
