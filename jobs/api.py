"""``/api/jobs``: submit a batch job (JSONL body or ``inputs_url``), read it, its results, cancel,
retry, list. Scope ``invoke``; a key reads its own jobs, an ``admin`` key (or staff) every job.

The upload is read line by line from the request's spooled body (Django spools past 2.5 MB to a
temporary file) in a thread, never whole in memory; the results stream from the database a page
at a time. No ORM call runs on the event loop.
"""

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import UUID

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from ninja import Query, Router
from pydantic import BaseModel, Field, create_model

from jobs import runs, services
from jobs.ingest import UploadRefused
from jobs.schemas import JobAccepted, JobListing, JobRequest, JobView, RunAccepted, RunView
from programs.responses import ErrorBody, ValidationErrorBody
from programs.runtime import Runtime
from programs.schemas import with_body_model

NDJSON = "application/x-ndjson"
router = Router(tags=["jobs"])

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            NDJSON: {
                "schema": {
                    "type": "string",
                    "description": 'one {"custom_id": "...", "inputs": {...}} per line',
                }
            },
            "application/json": {"schema": JobRequest.model_json_schema()},
        },
    },
    "parameters": [
        {"in": "query", "name": "program", "schema": {"type": "string"}, "description": "with a JSONL body"},
        {"in": "query", "name": "version", "schema": {"type": "string"}, "description": "with a JSONL body"},
    ],
}


def _caller(request: HttpRequest) -> Any:
    return getattr(request, "auth", None)


def _own_key_id(request: HttpRequest) -> int | None:
    caller = _caller(request)
    return caller.own_key_id if caller is not None else None


def _not_found(job_id: Any) -> JsonResponse:
    return JsonResponse({"detail": f"Job {job_id} not found"}, status=404)


@router.post(
    "/api/jobs",
    response={202: JobAccepted, 400: ErrorBody, 404: ErrorBody, 413: ErrorBody, 415: ErrorBody},
    summary="Submit a batch job: a JSONL body (?program=P) or {program, inputs_url}",
    openapi_extra=UPLOAD_BODY,
)
async def submit_job(request: HttpRequest) -> JsonResponse:
    media = (request.content_type or "").lower()
    if media not in (NDJSON, "application/jsonl", "application/json"):
        return JsonResponse(
            {"detail": f"Send {NDJSON} (the lines) or application/json ({{program, inputs_url}})"}, status=415
        )
    caller = _caller(request)
    try:
        if media == "application/json":
            job = await sync_to_async(services.submit_from_url, thread_sensitive=False)(request.body, caller)
        else:
            program, version = request.GET.get("program", ""), request.GET.get("version", "")
            job = await sync_to_async(services.submit_lines, thread_sensitive=False)(
                program, version, caller, request
            )
    except UploadRefused as refused:
        return JsonResponse({"detail": str(refused)}, status=refused.status)
    return JsonResponse({"id": str(job.id), "status": job.status, "total": job.total}, status=202)


@router.get(
    "/api/jobs",
    response={200: JobListing, 422: ValidationErrorBody},
    summary="Jobs, newest first (a key's own; admin: all)",
)
async def list_jobs(request: HttpRequest, limit: int = Query(50, ge=1, le=500)) -> JsonResponse:
    jobs = await sync_to_async(services.job_list)(_own_key_id(request), limit)
    return JsonResponse({"jobs": jobs})


@router.get(
    "/api/jobs/{job_id}",
    response={200: JobView, 404: ErrorBody, 422: ValidationErrorBody},
    summary="A job's status and counts",
)
async def get_job(request: HttpRequest, job_id: UUID) -> JsonResponse:
    view = await sync_to_async(services.job_view)(job_id, _own_key_id(request))
    return JsonResponse(view) if view is not None else _not_found(job_id)


@router.get(
    "/api/jobs/{job_id}/results",
    response={200: None, 404: ErrorBody, 422: ValidationErrorBody},
    summary="The finished items' results, streamed as JSONL (one line per item, in upload order)",
    openapi_extra={
        "responses": {200: {"description": "JSONL", "content": {NDJSON: {"schema": {"type": "string"}}}}}
    },
)
async def job_results(request: HttpRequest, job_id: UUID) -> HttpResponse:
    visible = await sync_to_async(services.visible)(job_id, _own_key_id(request))
    if not visible:
        return _not_found(job_id)
    return StreamingHttpResponse(_lines(job_id), content_type=NDJSON)


async def _lines(job_id: UUID) -> AsyncIterator[bytes]:
    after = 0
    while True:
        page = await sync_to_async(services.results_page)(job_id, after)
        if not page:
            return
        after = page[-1][0]
        yield "".join(body + "\n" for _line, body in page).encode()


@router.post(
    "/api/jobs/{job_id}/cancel",
    response={200: JobView, 404: ErrorBody, 409: ErrorBody, 422: ValidationErrorBody},
    summary="Cancel: no new item starts after this answer",
)
async def cancel_job(request: HttpRequest, job_id: UUID) -> JsonResponse:
    return await _act(services.cancel, request, job_id)


@router.post(
    "/api/jobs/{job_id}/retry",
    response={200: JobView, 404: ErrorBody, 409: ErrorBody, 422: ValidationErrorBody},
    summary="Run the failed items again",
)
async def retry_job(request: HttpRequest, job_id: UUID) -> JsonResponse:
    return await _act(services.retry, request, job_id)


async def _act(action: Any, request: HttpRequest, job_id: UUID) -> JsonResponse:
    try:
        view = await sync_to_async(action)(job_id, _own_key_id(request))
    except services.Conflict as conflict:
        return JsonResponse({"detail": str(conflict)}, status=409)
    return JsonResponse(view) if view is not None else _not_found(job_id)


def runs_router(runtime: Runtime) -> Router:
    """``POST /{P}/runs`` for every program, its body the program's inputs (as its plain route's)
    plus ``webhook_url`` and ``version``: the OpenAPI document states each program's schema."""
    runs_routes = Router(tags=["runs"])
    for program in runtime.programs.values():
        request_model = create_model(
            f"{program.name}RunRequest",
            __base__=program.inputs.model,
            webhook_url=(str, Field("", description="POSTed the answer when the run finishes (signed)")),
            version=(str, Field("", description="the program version ('': production)")),
        )
        runs_routes.add_api_operation(
            f"/{program.name}/runs",
            ["POST"],
            with_body_model(_start_run(program.name), request_model, f"run_{program.name}_in_background"),
            response={202: RunAccepted, 400: ErrorBody, 422: ValidationErrorBody},
            operation_id=f"{program.name}_runs",
            summary=f"Run {program.name} in the background: 202 with a run id; the answer at "
            "GET /api/runs/{id} and, with webhook_url, POSTed there signed (Standard Webhooks)",
        )
    return runs_routes


def _start_run(program: str) -> Callable[..., Awaitable[JsonResponse]]:
    async def view(request: HttpRequest, payload: BaseModel) -> JsonResponse:
        inputs = json.loads(request.body)  # validated as the program's inputs by the body model
        webhook_url, version = str(inputs.pop("webhook_url", "")), str(inputs.pop("version", ""))
        try:
            run = await sync_to_async(runs.submit, thread_sensitive=False)(
                program, version, inputs, webhook_url, _caller(request)
            )
        except runs.RunRefused as refused:
            return JsonResponse({"detail": str(refused)}, status=400)
        return JsonResponse({"run_id": str(run.id)}, status=202)

    return view


@router.get(
    "/api/runs/{run_id}",
    response={200: RunView, 404: ErrorBody, 422: ValidationErrorBody},
    summary="A background run: its status, then its outputs or error (the webhook's body)",
)
async def get_run(request: HttpRequest, run_id: UUID) -> JsonResponse:
    view = await sync_to_async(runs.run_view)(run_id, _own_key_id(request))
    if view is None:
        return JsonResponse({"detail": f"Run {run_id} not found"}, status=404)
    return JsonResponse(view)
