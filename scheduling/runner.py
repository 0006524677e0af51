"""One run of a cron job: fetch the inputs, call the program on each, give each result to a hook.

As dspy-cli 0.1.13's scheduler does (``dspy_cli/server/scheduler.py``): ``_``-prefixed keys are
removed before the call and the hooks get the original dict; each item ends in exactly one of
``on_complete(inputs, output)`` or ``on_error(inputs, error)``, and a hook that raises is logged.
An ``on_complete`` that raises fails its item and is handed to ``on_error`` (dspy-cli does so in
sequential mode). Batch mode is ``num_threads`` items in flight through the one call path instead
of DSPy's thread pool, and ``max_errors`` stops the run from starting new items, as DSPy's
``Parallel`` stops; the items it never started get ``on_error`` with :class:`RunStopped` (dspy-cli
hands every item the cancellation error then, the finished ones included).
"""

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from pydantic_core import to_json

from programs.calls import call_program, report_rejected
from programs.execution import CallFailed
from scheduling.jobs import CronJob
from scheduling.models import CronRun

logger = logging.getLogger(__name__)

ERRORS_KEPT = 3  # item errors written on the run; the count says how many more


class RunStopped(Exception):
    """Handed to ``on_error`` for an item that never ran: the run stopped before it."""


@dataclass
class RunReport:
    """What a run did so far; complete once :func:`run_job` returns."""

    items: int = 0
    ok: int = 0
    failed: int = 0
    stopped: str = ""  # why items were left unrun, or why the run could not start
    interrupted: bool = False  # the process is stopping
    item_errors: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.interrupted:
            return CronRun.Status.INTERRUPTED
        if self.ok == self.items and not self.stopped:
            return CronRun.Status.OK
        return CronRun.Status.FAILED if self.ok == 0 else CronRun.Status.PARTIAL

    @property
    def error(self) -> str:
        parts = [self.stopped, *self.item_errors] if self.stopped else list(self.item_errors)
        if self.failed > len(self.item_errors):
            parts.append(f"{self.failed - len(self.item_errors)} more item(s) failed")
        return "; ".join(parts)

    def item_failed(self, index: int, error: BaseException) -> None:
        self.failed += 1
        if len(self.item_errors) < ERRORS_KEPT:
            self.item_errors.append(f"item {index}: {describe(error)}")


def describe(error: BaseException) -> str:
    if isinstance(error, CallFailed):
        return f"{error.status} {error.error_type}: {error.detail}"
    if isinstance(error, ValidationError):  # one line: field and problem
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'item'}: {e['msg']}" for e in error.errors())
        return f"invalid inputs: {problems}"
    return f"{type(error).__name__}: {error}"


async def run_job(job: CronJob, run_id: int, report: RunReport, stopping: Callable[[], bool]) -> None:
    """Run the job once, filling ``report``; ``stopping()`` turning true stops new items."""
    try:
        inputs = await job.gateway.get_pipeline_inputs()
    except Exception as exc:
        logger.exception("Cron job %s: get_pipeline_inputs failed", job.id)
        report.stopped = f"get_pipeline_inputs raised {describe(exc)}"
        return
    pending = deque(enumerate(inputs or ()))
    report.items = len(pending)

    def stop_reason() -> str:
        if stopping():
            report.interrupted = True
            return "the server is stopping"
        if job.max_errors is not None and report.failed >= job.max_errors:
            return f"stopped after {report.failed} failed item(s) (max_errors={job.max_errors})"
        return ""

    async def lane() -> None:
        while pending and not stop_reason():
            index, raw = pending.popleft()
            await _run_item(job, f"cron-{run_id}.{index}", index, raw, report)

    await asyncio.gather(*(lane() for _ in range(min(job.concurrency, len(pending)))))
    if pending:
        report.stopped = f"{stop_reason()}; {len(pending)} item(s) not run"
        for _, raw in pending:
            await _hook(job, "on_error", job.gateway.on_error(raw, RunStopped(report.stopped)))


async def _run_item(job: CronJob, request_id: str, index: int, raw: Any, report: RunReport) -> None:
    program = job.program
    try:
        if not isinstance(raw, dict):
            raise TypeError(f"get_pipeline_inputs gave a {type(raw).__name__}, not a dict")
        inputs = job.gateway.extract_pipeline_kwargs(raw)
        try:
            payload = program.inputs.model.model_validate(inputs)
        except ValidationError as exc:  # refused before the call: reported like every door's
            errors = json.loads(exc.json(include_url=False, include_input=False))
            report_rejected(
                program, status=422, error_type="ValidationError", detail=errors,
                inputs=to_json(inputs, fallback=str), source="cron", entry=job.id, request_id=request_id,
            )  # fmt: skip
            raise
        kwargs = program.inputs.to_kwargs(payload)
        result = await call_program(program, kwargs, source="cron", entry=job.id, request_id=request_id)
        await job.gateway.on_complete(raw, result.output)
    except Exception as exc:  # noqa: BLE001 - whatever failed (the call, on_complete) is the item's
        logger.warning("Cron job %s: item %d failed: %s", job.id, index, describe(exc))
        report.item_failed(index, exc)
        await _hook(job, "on_error", job.gateway.on_error(raw, exc))
    else:
        report.ok += 1


async def _hook(job: CronJob, name: str, call: Awaitable[None]) -> None:
    try:
        await call
    except Exception:
        logger.exception("Cron job %s: %s raised", job.id, name)
