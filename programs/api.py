"""HTTP routes of the programs app: one route per gateway of each program, the listing, health.

A program without a declared gateway has ``POST /{Program}`` (plus ``/batch`` and ``/stream``);
each dspy-cli ``APIGateway`` it declares has its own route (:mod:`programs.routes`). Every route
calls the program through :func:`programs.calls.call_program`, like every other front door.
"""

import json
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.request import RawPostDataException
from django.utils.module_loading import import_string
from ninja import Query, Router
from ninja.errors import ValidationError as NinjaValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import to_json

from programs.calls import call_program, report_rejected
from programs.context import REQUEST_ID_HEADER, VERSION_HEADER, request_id, request_id_from
from programs.execution import CallFailed
from programs.gateways import APIGateway, CronGateway, maybe_await
from programs.program import Program, describe_versions
from programs.responses import Alive, ErrorBody, NotReady, ProgramListing, Ready, call_headers, call_responses
from programs.routes import GatewayRoute
from programs.runtime import Runtime, get_runtime
from programs.schemas import with_body_model

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
__all__ = ["ErrorBody", "build_router"]  # ErrorBody lives in programs.responses


def route_auth() -> Any:
    """The auth of protected routes, from ``DSPY_ROUTE_AUTH`` (API keys plug in there, not here)."""
    factory = import_string(settings.DSPY_ROUTE_AUTH) if settings.DSPY_ROUTE_AUTH else None
    return factory() if factory is not None else None


def program_listing(runtime: Runtime) -> list[dict[str, Any]]:
    plain = {route.program.name: route.path for route in runtime.routes.gateway_routes if route.plain}
    return [
        {
            "name": program.name,
            "endpoint": plain.get(program.name),
            "model": program.model_alias,
            "execution": _execution(program),
            "description": program.description,
            "input_schema": program.inputs.model.model_json_schema(),
            "output_schema": _json_schema(program.outputs.model),
            "gateways": [_gateway_entry(runtime, program, gateway) for gateway in program.gateways],
            **describe_versions(program),
        }
        for program in runtime.programs.values()
    ]


def _gateway_entry(runtime: Runtime, program: Program, gateway: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": type(gateway).__name__}
    if isinstance(gateway, CronGateway):
        entry.update(type="cron", schedule=getattr(gateway, "schedule", None))
    route = next(
        (r for r in runtime.routes.gateway_routes if r.program is program and r.gateway is gateway), None
    )
    if route is not None:
        entry.update(type="api", method=route.method, path=route.path, requires_auth=gateway.requires_auth)
    return entry


def _execution(program: Program) -> str:
    return "async" if program.is_async else "sync"


def _json_schema(annotation: Any) -> dict[str, Any]:
    return TypeAdapter(annotation).json_schema()


def build_router(runtime: Runtime) -> Router:
    router = Router()
    auth = route_auth()  # None unless API keys are on (server.auth)

    @router.get(
        "/programs",
        response=ProgramListing,
        tags=["service"],
        summary="List the served programs and schemas",
        auth=auth,
    )
    async def list_programs(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"programs": program_listing(runtime)})

    @router.get("/health/live", response=Alive, tags=["service"], summary="Liveness: the process answers")
    async def live(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"status": "alive"})

    @router.get(
        "/health/ready",
        response={200: Ready, 503: NotReady},
        tags=["service"],
        summary="Readiness: every program loaded (503 while draining or when a program failed to load)",
    )
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

    # Every door of the route table: gateway routes, and beside each plain route POST
    # /{Program}/batch and POST /{Program}/stream (docs/DEVELOPING.md).
    from programs.batch import add_batch_route
    from programs.streaming import add_stream_route

    for door in runtime.routes:
        if door.route is not None:
            _add_gateway_route(router, door.route, None if not door.route.gateway.requires_auth else auth)
        elif door.kind == "batch":
            add_batch_route(router, runtime, door.program, auth=auth)
        else:
            add_stream_route(router, runtime, door.program, auth=auth)
    return router


def _add_gateway_route(router: Router, route: GatewayRoute, auth: Any) -> None:
    program, gateway = route.program, route.gateway
    if route.plain:
        view, request_model = _program_view(program), program.inputs.model
    else:
        view, request_model = _gateway_view(route), gateway.request_model or program.inputs.model
    described = f"{_execution(program)}, model {program.model_alias}"
    router.add_api_operation(
        route.path,
        [route.method],
        with_body_model(
            view,
            request_model if route.method in BODY_METHODS else Query[request_model],  # type: ignore[valid-type]
            f"run_{program.name}_{type(gateway).__name__}",
        ),
        response=call_responses(_response_model(route)),
        openapi_extra=call_headers(),
        operation_id=program.name if route.plain else f"{program.name}_{type(gateway).__name__}",
        summary=f"Run {program.name} ({described})"
        if route.plain
        else f"Run {program.name} through {type(gateway).__name__} ({described})",
        description=(type(gateway).__doc__ or "").strip() if not route.plain else program.description,
        tags=["programs"] if route.plain else ["gateways"],
        auth=auth,
    )


def _response_model(route: GatewayRoute) -> Any:
    """What the route answers: the gateway's ``response_model``, else the outputs unless transformed."""
    gateway = route.gateway
    if gateway.response_model is not None:
        return gateway.response_model
    if type(gateway).from_pipeline_output is APIGateway.from_pipeline_output:
        return route.program.outputs.model
    return dict[str, Any]


def _program_view(program: Program) -> Callable[..., Awaitable[HttpResponse]]:
    """The plain route: the body is the inputs, the outputs are the answer (the fast path)."""

    async def view(request: HttpRequest, payload: BaseModel) -> HttpResponse:
        rid = request_id(request)
        kwargs = program.inputs.to_kwargs(payload)
        try:
            result = await call_program(
                program, kwargs, source="http", request_id=rid, raw_inputs=request.body,
                version=request.headers.get(VERSION_HEADER), headers=request.headers,
            )  # fmt: skip
        except CallFailed as failure:
            response: HttpResponse = failure.response()
            answered = failure.version
        else:
            response = HttpResponse(result.body, content_type="application/json")
            answered = result.version
        response[REQUEST_ID_HEADER] = rid
        if answered:
            response[VERSION_HEADER] = answered
        return response

    return view


def _gateway_view(route: GatewayRoute) -> Callable[..., Awaitable[HttpResponse]]:
    """A gateway's route: its request through ``to_pipeline_inputs``, the outputs through
    ``from_pipeline_output`` (either hook may be async), validated by its ``response_model``."""
    program, gateway = route.program, route.gateway
    answer = TypeAdapter(gateway.response_model) if gateway.response_model is not None else None

    async def view(request: HttpRequest, payload: BaseModel) -> HttpResponse:
        rid = request_id(request)
        kwargs = await _pipeline_kwargs(route, payload)
        raw = request.body if route.method in BODY_METHODS else to_json(payload)
        answered = ""
        try:
            result = await call_program(
                program, kwargs, source=route.source, entry=route.entry, request_id=rid, raw_inputs=raw,
                version=request.headers.get(VERSION_HEADER), headers=request.headers,
            )  # fmt: skip
            answered = result.version
            body = await maybe_await(gateway.from_pipeline_output(result.output))
            if answer is not None:
                body = answer.validate_python(body)
        except CallFailed as failure:
            response: HttpResponse = failure.response()
            answered = failure.version
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "answer"
            detail = f"{route.name}.from_pipeline_output: not its response_model: {where}: {first['msg']}"
            response = JsonResponse({"detail": detail, "program": program.name}, status=500)
        else:
            response = HttpResponse(to_json(body, fallback=str), content_type="application/json")
        response[REQUEST_ID_HEADER] = rid
        if answered:
            response[VERSION_HEADER] = answered
        return response

    return view


async def _pipeline_kwargs(route: GatewayRoute, payload: BaseModel) -> dict[str, Any]:
    """``to_pipeline_inputs`` of the request, validated as the program's inputs (422 naming the field).

    ``_``-prefixed keys are dspy-cli's metadata convention and never reach ``forward()``.
    """
    program, gateway = route.program, route.gateway
    if gateway.request_model is None and type(gateway).to_pipeline_inputs is APIGateway.to_pipeline_inputs:
        return program.inputs.to_kwargs(payload)  # the body was validated as the inputs already
    inputs = await maybe_await(gateway.to_pipeline_inputs(payload))
    try:
        validated = program.inputs.model.model_validate(
            {key: value for key, value in dict(inputs).items() if not key.startswith("_")}
        )
    except ValidationError as exc:
        errors = json.loads(exc.json(include_url=False, include_input=False))
        for error in errors:
            error["loc"] = ["pipeline_inputs", *error["loc"]]
        raise NinjaValidationError(errors) from None
    return program.inputs.to_kwargs(validated)


# -- requests refused before a program route's view ran -------------------------------------------


def report_refused(request: HttpRequest, exc: Exception, response: HttpResponse) -> None:
    """For the API's exception handling: a program route's request that django-ninja answered
    with an error (malformed JSON 400, invalid inputs 422, a body too large 413...) is reported as
    the route's call (:func:`programs.calls.report_rejected`), its request id on the answer."""
    route = get_runtime().routes.gateway_route(request.method or "", request.path_info)
    if route is None:
        return
    rid = request_id(request)
    response[REQUEST_ID_HEADER] = rid
    report_rejected(
        route.program,
        status=response.status_code,
        error_type=type(exc).__name__,
        detail=exc.errors if isinstance(exc, NinjaValidationError) else str(exc),
        inputs=_body(request),
        source=route.source,
        entry=route.entry,
        request_id=rid,
    )


def report_body_too_large(scope: dict[str, Any], detail: str) -> None:
    """For ``dspysite.lifespan.BodyLimitMiddleware``: a 413 sent before Django saw the request."""
    route = get_runtime().routes.gateway_route(str(scope.get("method", "")), str(scope.get("path", "")))
    if route is None:
        return
    headers = dict(scope.get("headers", ()))
    report_rejected(
        route.program,
        status=413,
        error_type="RequestDataTooBig",
        detail=detail,
        inputs=None,
        source=route.source,
        entry=route.entry,
        request_id=request_id_from(headers.get(b"x-request-id", b"").decode("latin-1")),
    )


def _body(request: HttpRequest) -> bytes | None:
    try:
        return request.body
    except (RequestDataTooBig, RawPostDataException):
        return None
