"""Where an evaluation or an optimization runs until the jobs engine lands ("Jobs on a real task
engine"): in the process that accepted it, an evaluation as a task on its event loop, an
optimization on a thread of its own (optimizers are sync). The jobs wiring replaces these two
functions by a submit of :func:`loop.evaluation.evaluation_run` /
:func:`loop.optimization.optimization_run`; nothing else changes. A run here does not survive its
process (its row stays ``running``).
"""

import asyncio
import contextvars
import threading

from django.db import connection

from loop.evaluation import evaluation_run
from loop.optimization import optimization_run

_tasks: set[asyncio.Task[None]] = set()  # held until done: the loop keeps only weak references


def start_evaluation(evaluation_id: int) -> None:
    # A context of its own: nothing of the request that accepted it (its id, its caller) carries over.
    task = asyncio.get_running_loop().create_task(
        evaluation_run(evaluation_id), context=contextvars.Context()
    )
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def start_optimization(optimization_id: int) -> None:
    def run() -> None:
        try:
            optimization_run(optimization_id)
        finally:
            connection.close()  # this thread's own connection

    threading.Thread(target=run, name=f"optimization-{optimization_id}", daemon=True).start()
