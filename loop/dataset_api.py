"""The datasets' routes (``admin`` scope): create, add items, export and import JSONL (loop.datasets)."""

from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from ninja import Router

from loop import datasets
from loop.models import Dataset
from loop.responses import DatasetIn, DatasetListing, DatasetOut, ImportOut, ItemsIn, ItemsOut
from programs.responses import ErrorBody, ValidationErrorBody
from programs.runtime import get_runtime

router = Router(tags=["loop"])
JSONL = "application/x-ndjson"
TEXT = {"type": "string"}


def _dataset_body(dataset: Dataset) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "program": dataset.program,
        "items": dataset.items.count(),
        "created_at": dataset.created_at.isoformat(),
    }


def _no_dataset(name: str) -> JsonResponse:
    return JsonResponse({"detail": f"No dataset named '{name}'. GET /api/datasets lists them."}, status=404)


@router.post(
    "/api/datasets",
    response={
        201: DatasetOut,
        400: ErrorBody,
        403: ErrorBody,
        404: ErrorBody,
        409: ErrorBody,
        422: ValidationErrorBody,
    },
    summary="Create a named dataset for a program",
)
async def dataset_create(request: HttpRequest, payload: DatasetIn) -> JsonResponse:
    if payload.program not in get_runtime().programs:
        detail = f"Program '{payload.program}' not found. GET /programs lists them."
        return JsonResponse({"detail": detail}, status=404)
    dataset, created = await Dataset.objects.aget_or_create(
        name=payload.name, defaults={"program": payload.program}
    )
    if not created:
        return JsonResponse(
            {"detail": f"A dataset named '{payload.name}' exists (for {dataset.program})."}, status=409
        )
    return JsonResponse(await sync_to_async(_dataset_body)(dataset), status=201)


@router.get(
    "/api/datasets",
    response={200: DatasetListing, 403: ErrorBody},
    summary="Every dataset, with its item count",
)
async def dataset_list(request: HttpRequest) -> JsonResponse:
    def listing() -> list[dict[str, Any]]:
        return [_dataset_body(dataset) for dataset in Dataset.objects.order_by("name")]

    return JsonResponse({"datasets": await sync_to_async(listing)()})


@router.post(
    "/api/datasets/{name}/items",
    response={201: ItemsOut, 400: ErrorBody, 403: ErrorBody, 404: ErrorBody, 422: ValidationErrorBody},
    summary="Add calls (by request id) or examples to a dataset",
    description="From calls: the inputs of each, labels = its newest correction (feedback) if any, "
    "else its outputs; calls of another program or without captured inputs are skipped.",
)
async def items_add(request: HttpRequest, name: str, payload: ItemsIn) -> JsonResponse:
    def add() -> JsonResponse:
        dataset = Dataset.objects.filter(name=name).first()
        if dataset is None:
            return _no_dataset(name)
        if payload.request_ids is not None:
            added, skipped = datasets.items_from_calls(dataset, payload.request_ids)
        else:
            added = datasets.items_from_examples(
                dataset, [example.model_dump() for example in payload.examples or []]
            )
            skipped = []
        body = {"dataset": name, "added": added, "skipped": skipped, "items": dataset.items.count()}
        return JsonResponse(body, status=201)

    return await sync_to_async(add)()


@router.get(
    "/api/datasets/{name}/export",
    response={403: ErrorBody, 404: ErrorBody},
    summary="The dataset as JSONL, streamed",
    description='One `{"inputs", "labels", "request_id", "feedback"}` a line: '
    "`dspy.Example(**inputs, **labels).with_inputs(*inputs)`.",
    openapi_extra={
        "responses": {200: {"description": "JSONL", "content": {JSONL: {"schema": {"type": "string"}}}}}
    },
)
async def dataset_export(request: HttpRequest, name: str) -> StreamingHttpResponse | JsonResponse:
    dataset = await Dataset.objects.filter(name=name).afirst()
    if dataset is None:
        return _no_dataset(name)
    response = StreamingHttpResponse(_export(dataset), content_type=JSONL)
    response["Content-Disposition"] = f'attachment; filename="{name}.jsonl"'
    return response


async def _export(dataset: Dataset) -> AsyncIterator[str]:
    """The export's lines, a chunk of rows per thread hop (the ORM is sync)."""
    last = 0
    while True:
        chunk = await sync_to_async(datasets.items_after)(dataset, last)
        if not chunk:
            return
        yield "".join(datasets.line_text(item) for item in chunk)
        last = chunk[-1].pk


@router.post(
    "/api/datasets/{name}/import",
    response={201: ImportOut, 403: ErrorBody, 404: ErrorBody, 422: ErrorBody},
    summary="Add the examples of a JSONL export (the request body), all or nothing",
    description="JSONL, one example a line, as exported (sent as `application/x-ndjson` or "
    "`text/plain`: the body is read as lines whatever its type).",
    openapi_extra={"requestBody": {"content": {"text/plain": {"schema": TEXT}}, "required": True}},
)
async def dataset_import(request: HttpRequest, name: str) -> JsonResponse:
    def load() -> JsonResponse:
        dataset = Dataset.objects.filter(name=name).first()
        if dataset is None:
            return _no_dataset(name)
        try:
            added = datasets.import_lines(dataset, request.body.decode("utf-8", "replace").splitlines())
        except datasets.DatasetError as exc:
            return JsonResponse({"detail": str(exc)}, status=422)
        return JsonResponse({"dataset": name, "added": added, "items": dataset.items.count()}, status=201)

    return await sync_to_async(load)()
