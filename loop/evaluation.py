"""The evaluation runner: each dataset item is a program call (``call_program(source="eval")``:
logged, priced, quotas and budgets as any call), scored by the metric; the score is the mean over
every item (a failed call scores 0).

:func:`evaluate_items` is the plain function (items in, results out); :func:`evaluation_run` is the
one the jobs wiring calls with an :class:`~loop.models.Evaluation`'s id: it claims each item's
result row once (unique per evaluation and item), so a re-run after a crash goes on where it was.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import dspy
from asgiref.sync import sync_to_async
from django.db import connection
from django.db.models import F
from django.utils import timezone
from pydantic import ValidationError

from loop.metrics import Metric, metric_for
from loop.models import DatasetItem, Evaluation, EvaluationItem, RunStatus
from programs.calls import call_program
from programs.execution import CallFailed
from programs.program import Program
from programs.runtime import get_runtime

CONCURRENCY = 4  # items in flight per evaluation
T = TypeVar("T")


@dataclass
class ItemResult:
    index: int
    outputs: dict[str, Any] | None
    score: float
    request_id: str
    error: str = ""


async def evaluate_item(
    program: Program, inputs: dict[str, Any], labels: dict[str, Any], metric: Metric, version: str | None
) -> ItemResult:
    """One item: the call, then the metric (in a thread: a judge metric makes calls of its own)."""
    try:
        kwargs = program.inputs.to_kwargs(program.inputs.model.model_validate(inputs))
    except ValidationError as exc:
        return ItemResult(0, None, 0.0, "", f"invalid inputs: {exc.errors(include_url=False)}")
    try:
        result = await call_program(program, kwargs, source="eval", version=version)
    except CallFailed as failure:
        return ItemResult(0, None, 0.0, failure.request_id or "", f"{failure.status}: {failure.error_type}")
    outputs = result.output
    example = dspy.Example(**inputs, **labels).with_inputs(*inputs)
    score = await in_thread(metric)(example, dspy.Prediction(**outputs))
    return ItemResult(0, outputs, float(score), result.request_id)


async def evaluate_items(
    program: Program,
    items: Sequence[tuple[dict[str, Any], dict[str, Any]]],
    metric: Metric,
    *,
    version: str | None = None,
    on_result: Callable[[ItemResult], Awaitable[None]] | None = None,
) -> tuple[list[ItemResult], float]:
    """Score ``(inputs, labels)`` items, ``CONCURRENCY`` at a time; returns the results (in order)
    and the mean score."""
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(index: int, inputs: dict[str, Any], labels: dict[str, Any]) -> ItemResult:
        async with slots:
            result = await evaluate_item(program, inputs, labels, metric, version)
        result.index = index
        if on_result is not None:
            await on_result(result)
        return result

    results = await asyncio.gather(*(one(index, *item) for index, item in enumerate(items)))
    return list(results), mean([result.score for result in results])


def in_thread(function: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """``function`` on a worker thread that gives its database connection back when done.

    A run outlives the request that started it: asgiref's thread-sensitive executor would give each
    call a thread whose connection nobody closes (on PostgreSQL the pool ran dry in one evaluation).
    """

    def closing(*args: Any, **kwargs: Any) -> T:
        try:
            return function(*args, **kwargs)
        finally:
            connection.close()

    return sync_to_async(closing, thread_sensitive=False)


def mean(scores: Sequence[float]) -> float:
    return sum(scores) / len(scores) if scores else 0.0


async def evaluation_run(evaluation_id: int) -> None:
    """Run a stored evaluation to the end: the function the jobs wiring calls."""
    evaluation = await in_thread(Evaluation.objects.select_related("dataset").get)(pk=evaluation_id)
    try:
        program = get_runtime().programs[evaluation.program]
        metric = metric_for(evaluation.metric, evaluation.field or None, evaluation.judge or None)
    except (KeyError, ValueError) as exc:
        await _finish(evaluation, RunStatus.FAILED, error=f"cannot run: {exc}")
        return
    claimed = await in_thread(_claimable)(evaluation)
    items = [(item.inputs, item.labels) for item in claimed]

    async def stored(result: ItemResult) -> None:
        await in_thread(_store)(evaluation, claimed[result.index], result)

    try:
        await evaluate_items(program, items, metric, version=evaluation.version or None, on_result=stored)
    except Exception as exc:  # noqa: BLE001 - the run fails, with its reason, never silently
        await _finish(evaluation, RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        return
    await _finish(evaluation, RunStatus.SUCCEEDED)


def _claimable(evaluation: Evaluation) -> list[DatasetItem]:
    """The dataset's items without a result yet (all of them on a first run)."""
    done = EvaluationItem.objects.filter(evaluation=evaluation).values("item_id")
    items = list(
        DatasetItem.objects.filter(dataset=evaluation.dataset_id).exclude(pk__in=done).order_by("pk")
    )
    total = DatasetItem.objects.filter(dataset=evaluation.dataset_id).count()
    Evaluation.objects.filter(pk=evaluation.pk).update(total=total, status=RunStatus.RUNNING)
    return items


def _store(evaluation: Evaluation, item: DatasetItem, result: ItemResult) -> None:
    _, created = EvaluationItem.objects.get_or_create(
        evaluation=evaluation,
        item=item,
        defaults={
            "outputs": result.outputs,
            "score": result.score,
            "request_id": result.request_id,
            "error": result.error,
        },
    )
    if created:
        Evaluation.objects.filter(pk=evaluation.pk).update(done=F("done") + 1)


async def _finish(evaluation: Evaluation, status: str, error: str = "") -> None:
    def finish() -> None:
        scores = list(EvaluationItem.objects.filter(evaluation=evaluation).values_list("score", flat=True))
        total = DatasetItem.objects.filter(dataset=evaluation.dataset_id).count()
        Evaluation.objects.filter(pk=evaluation.pk).update(
            status=status,
            error=error,
            score=sum(scores) / total if status == RunStatus.SUCCEEDED and total else None,
            finished_at=timezone.now(),
        )

    await in_thread(finish)()
