"""HTTP routes of the programs app: one ``POST /{Program}`` per program, the listing, health."""

import itertools
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import Router
from pydantic import BaseModel

from apikeys.auth import api_key_auth
from programs.execution import CallFailed, run_program
from programs.runtime import Program, Runtime
from programs.schemas import with_body_model
from telemetry.services import inference_tracking

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class ErrorBody(BaseModel):
    detail: Any
    error_type: str | None = None
    program: str | None = None
    upstream_status: int | None = None


# New ids are a random per-process prefix plus a counter: unique without a syscall per request.
_ID_PREFIX = uuid.uuid4().hex[:12]
_ID_COUNTER = itertools.count(1)


def request_id(request: HttpRequest) -> str:
    """The client's ``X-Request-ID`` when well-formed, else a new one."""
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    return incoming if _REQUEST_ID.match(incoming) else f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"


def program_listing(runtime: Runtime) -> list[dict[str, Any]]:
    return [
        {
            "name": program.name,
            "endpoint": f"/{program.name}",
            "model": program.model_alias,
            "execution": _execution(program),
            "description": program.description,
            "input_schema": program.inputs.model.model_json_schema(),
            "output_schema": _json_schema(program.outputs.model),
        }
        for program in runtime.programs.values()
    ]


def _execution(program: Program) -> str:
    return "async" if program.is_async else "sync"


def _json_schema(annotation: Any) -> dict[str, Any]:
    from pydantic import TypeAdapter

    return TypeAdapter(annotation).json_schema()


def build_router(runtime: Runtime) -> Router:
    router = Router()
    auth = api_key_auth()  # API keys on the program routes and the listing; None unless server.auth

    @router.get("/programs", tags=["service"], summary="List the served programs and schemas", auth=auth)
    async def list_programs(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"programs": program_listing(runtime)})

    @router.get("/health/live", tags=["service"], summary="Liveness: the process answers")
    async def live(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"status": "alive"})

    @router.get("/health/ready", tags=["service"], summary="Readiness: every program loaded")
    async def ready(request: HttpRequest) -> JsonResponse:
        if runtime.draining:
            return JsonResponse({"status": "draining"}, status=503)
        if runtime.failures:
            failed = [
                {"module": failure.module_file, "programs": list(failure.programs), "error": failure.error}
                for failure in runtime.failures
            ]
            return JsonResponse({"status": "not ready", "failed": failed}, status=503)
        return JsonResponse({"status": "ready", "programs": len(runtime.programs)})

    for program in runtime.programs.values():
        router.add_api_operation(
            f"/{program.name}",
            ["POST"],
            _program_view(runtime, program),
            response={200: program.outputs.model, (400, 404, 413, 422, 429, 500, 502, 503, 504): ErrorBody},
            operation_id=program.name,
            summary=f"Run {program.name} ({_execution(program)}, model {program.model_alias})",
            description=program.description,
            tags=["programs"],
            auth=auth,
        )
    # Beside each program: POST /{Program}/batch and POST /{Program}/stream (docs/DEVELOPING.md).
    from programs.batch import add_batch_route
    from programs.streaming import add_stream_route

    for program in runtime.programs.values():
        add_batch_route(router, runtime, program, auth=auth)
        add_stream_route(router, runtime, program, auth=auth)
    return router


def _program_view(runtime: Runtime, program: Program) -> Callable[..., Awaitable[HttpResponse]]:
    async def view(request: HttpRequest, payload: BaseModel) -> HttpResponse:
        rid = request_id(request)
        # One telemetry record per request, whatever happens (docs/TELEMETRY.md); usage is per request.
        with inference_tracking(program, rid, request.body) as tracking:
            kwargs = program.inputs.to_kwargs(payload)
            try:
                body = await run_program(runtime, program, kwargs, tracking.usage)
            except CallFailed as failure:
                tracking.failed(failure.status, failure.error_type, failure.detail)
                response: HttpResponse = failure.response()
            else:
                tracking.succeeded(body)
                response = HttpResponse(body, content_type="application/json")
        response[REQUEST_ID_HEADER] = rid
        return response

    return with_body_model(view, program.inputs.model, f"run_{program.name}")
