"""The worker side of :func:`jobs.engine.submit_function`: another app's function run in a job worker.

A function is named by its module and name (what the engine stores is JSON), imported here and
called; a coroutine function's coroutine runs on the worker's event loop, where the programs'
connection pools live (:meth:`jobs.worker.JobWorker.run`), as a chunk's items do.
"""

import importlib
import inspect
from collections.abc import Sequence
from typing import Any

from jobs.worker import current_worker


def run_function(path: str, args: Sequence[Any]) -> None:
    module, _, name = path.partition(":")
    function = getattr(importlib.import_module(module), name)
    result = function(*args)
    if inspect.iscoroutine(result):
        current_worker().run(result)
