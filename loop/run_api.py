"""Evaluations and optimizations (``admin`` scope): 202 with an id, then poll it; two evaluations of
one dataset compared; an optimization cancelled.

Both are checked before they are accepted (404 naming what is missing: program, dataset, version
or alias, metric function, judge; 409 for a dataset of another program), then handed to
:mod:`loop.background` (the jobs engine's place).
"""

from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from ninja import Router

from loop import background
from loop.metrics import MetricError, metric_for
from loop.models import Dataset, Evaluation, EvaluationItem, Optimization
from loop.optimization_watch import AlreadyRegistering, cancel
from loop.responses import Accepted, Compared, EvaluationIn, EvaluationOut, OptimizationIn, OptimizationOut
from loop.selectors import evaluation_comparison
from programs.responses import ErrorBody, ValidationErrorBody
from programs.runtime import get_runtime
from versions import registry
from versions.models import Alias

router = Router(tags=["loop"])


class Refused(Exception):
    """What a run cannot be created with: its status (404 missing, 409 mismatched) and why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def _dataset_for(program: str, name: str) -> Dataset:
    """The dataset of ``program`` named ``name`` (raises :class:`Refused`)."""
    if program not in get_runtime().programs:
        raise Refused(404, f"Program '{program}' not found. GET /programs lists them.")
    dataset = Dataset.objects.filter(name=name).first()
    if dataset is None:
        raise Refused(404, f"No dataset named '{name}'. GET /api/datasets lists them.")
    if dataset.program != program:
        raise Refused(409, f"Dataset '{name}' is for {dataset.program}, not {program}.")
    return dataset


def _check_metric(metric: str, field: str, judge: str | None) -> None:
    """The metric can be built: its function imports, its judge is served (else 404)."""
    try:
        metric_for(metric, field or None, judge or None)
    except MetricError as exc:
        raise Refused(404, str(exc)) from exc


def _check_version(program: str, asked: str, *, one: bool) -> None:
    """``asked`` names a version or an alias of ``program`` (``one``: an alias of one version, what
    an optimization starts from; an evaluation may run a split as the calls do). Else 404."""
    if one:
        try:
            registry.resolve(program, asked)
        except LookupError as exc:
            raise Refused(404, str(exc)) from exc
    elif (
        asked
        and asked not in registry.labels(program)
        and not Alias.objects.filter(program=program, name=asked).exists()
    ):
        raise Refused(
            404, f"{program} has no version or alias {asked!r} (GET /api/programs/{program}/versions)"
        )


async def _accepted(create: Callable[[], int], start: Callable[[int], None]) -> JsonResponse:
    """Create the run's row and queue it for a job worker in one transaction (in a thread), or
    answer what is wrong: 202."""

    def create_and_start() -> int:
        with transaction.atomic():
            created = create()
            start(created)
        return created

    try:
        created = await sync_to_async(create_and_start)()
    except Refused as refused:
        return JsonResponse({"detail": str(refused)}, status=refused.status)
    return JsonResponse({"id": created}, status=202)


@router.post(
    "/api/evaluations",
    response={
        202: Accepted,
        400: ErrorBody,
        403: ErrorBody,
        404: ErrorBody,
        409: ErrorBody,
        422: ValidationErrorBody,
    },
    summary="Score a program version on a dataset with a metric (runs in the background)",
)
async def evaluation_create(request: HttpRequest, payload: EvaluationIn) -> JsonResponse:
    def create() -> int:
        dataset = _dataset_for(payload.program, payload.dataset)
        _check_version(payload.program, payload.version, one=False)
        _check_metric(payload.metric, payload.field, payload.judge)
        fields = payload.model_dump(exclude={"dataset"})
        return Evaluation.objects.create(dataset=dataset, total=dataset.items.count(), **fields).pk

    return await _accepted(create, background.start_evaluation)


@router.get(
    "/api/evaluations/compare",
    response={200: Compared, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 422: ValidationErrorBody},
    summary="Two evaluations of one dataset side by side, the items that changed first",
)
async def evaluation_compare(request: HttpRequest, a: int, b: int) -> JsonResponse:
    def body() -> dict[str, Any]:
        runs = {run.pk: run for run in Evaluation.objects.select_related("dataset").filter(pk__in=[a, b])}
        missing = [str(pk) for pk in (a, b) if pk not in runs]
        if missing:
            raise Refused(404, f"No evaluation {', '.join(missing)}.")
        left, right = runs[a], runs[b]
        if left.dataset_id != right.dataset_id:
            raise Refused(409, f"Evaluations {a} and {b} are on different datasets.")
        items = evaluation_comparison(left, right)
        return {
            "a": a,
            "b": b,
            "a_version": left.version,
            "b_version": right.version,
            "a_score": left.score,
            "b_score": right.score,
            "dataset": left.dataset.name,
            "changed": sum(item["changed"] for item in items),
            "items": items,
        }

    try:
        return JsonResponse(await sync_to_async(body)())
    except Refused as refused:
        return JsonResponse({"detail": str(refused)}, status=refused.status)


@router.get(
    "/api/evaluations/{evaluation_id}",
    response={200: EvaluationOut, 403: ErrorBody, 404: ErrorBody, 422: ValidationErrorBody},
    summary="An evaluation: status, progress, score and every item's result",
)
async def evaluation_get(request: HttpRequest, evaluation_id: int) -> JsonResponse:
    body = await sync_to_async(_evaluation_body)(evaluation_id)
    if body is None:
        return JsonResponse({"detail": f"No evaluation {evaluation_id}."}, status=404)
    return JsonResponse(body)


def _evaluation_body(evaluation_id: int) -> dict[str, Any] | None:
    evaluation = Evaluation.objects.select_related("dataset").filter(pk=evaluation_id).first()
    if evaluation is None:
        return None
    items = EvaluationItem.objects.filter(evaluation=evaluation).select_related("item").order_by("item_id")
    return {
        "id": evaluation.pk,
        "program": evaluation.program,
        "version": evaluation.version,
        "dataset": evaluation.dataset.name,
        "metric": evaluation.metric,
        "field": evaluation.field,
        "status": evaluation.status,
        "progress": {"done": evaluation.done, "total": evaluation.total},
        "score": evaluation.score,
        "error": evaluation.error,
        "items": [
            {
                "inputs": result.item.inputs,
                "labels": result.item.labels,
                "outputs": result.outputs,
                "score": result.score,
                "request_id": result.request_id,
                "error": result.error,
            }
            for result in items
        ],
    }


@router.post(
    "/api/optimizations",
    response={
        202: Accepted,
        400: ErrorBody,
        403: ErrorBody,
        404: ErrorBody,
        409: ErrorBody,
        422: ValidationErrorBody,
    },
    summary="Compile a program on a dataset with a DSPy optimizer (runs in the background)",
    description="Starts from `from_version` (a version or an alias; production by default). The "
    "compiled state is registered as a new version of the program (its `version` in the answer), with "
    "its validation score and lineage; never promoted by itself.",
)
async def optimization_create(request: HttpRequest, payload: OptimizationIn) -> JsonResponse:
    def create() -> int:
        dataset = _dataset_for(payload.program, payload.dataset)
        valset = _dataset_for(payload.program, payload.valset) if payload.valset else None
        _check_version(payload.program, payload.from_version, one=True)
        _check_metric(payload.metric, payload.field, payload.params.get("judge"))
        fields = payload.model_dump(exclude={"dataset", "valset"})
        return Optimization.objects.create(dataset=dataset, valset=valset, **fields).pk

    return await _accepted(create, background.start_optimization)


@router.get(
    "/api/optimizations/{optimization_id}",
    response={200: OptimizationOut, 403: ErrorBody, 404: ErrorBody, 422: ValidationErrorBody},
    summary="An optimization: status, validation score, the compiled state",
)
async def optimization_get(request: HttpRequest, optimization_id: int) -> JsonResponse:
    def body() -> dict[str, Any] | None:
        run = Optimization.objects.select_related("dataset", "valset").filter(pk=optimization_id).first()
        if run is None:
            return None
        return {
            "id": run.pk,
            "program": run.program,
            "from_version": run.from_version,
            "dataset": run.dataset.name,
            "valset": run.valset.name if run.valset is not None else None,
            "metric": run.metric,
            "optimizer": run.optimizer,
            "params": run.params,
            "status": run.status,
            "progress": run.progress,
            "version": run.version,
            "score": run.score,
            "state": run.state,
            "request_id": run.request_id,
            "error": run.error,
        }

    found = await sync_to_async(body)()
    if found is None:
        return JsonResponse({"detail": f"No optimization {optimization_id}."}, status=404)
    return JsonResponse(found)


@router.post(
    "/api/optimizations/{optimization_id}/cancel",
    response={202: Accepted, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 422: ValidationErrorBody},
    summary="Stop an optimization (at its next trial, before it registers a version)",
    description="202: it stops and ends `cancelled`; 409 when it is already registering or finished.",
)
async def optimization_cancel(request: HttpRequest, optimization_id: int) -> JsonResponse:
    try:
        await sync_to_async(cancel)(optimization_id)
    except Optimization.DoesNotExist:
        return JsonResponse({"detail": f"No optimization {optimization_id}."}, status=404)
    except AlreadyRegistering as exc:
        return JsonResponse({"detail": str(exc)}, status=409)
    return JsonResponse({"id": optimization_id}, status=202)
