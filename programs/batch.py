"""``POST /{Program}/batch``: many inputs in one request, run concurrently, answered in input order.

Body: ``{"inputs": [{...}, ...], "max_concurrency": N}``. Answer (200 whatever the items did, once
the request itself is accepted):
``{"results": [{"ok": true, "outputs": {...}} | {"ok": false, "error": "...", "status": 502, ...}]}``.

* Each item is validated on its own, so one bad item fails only its slot (``status`` 422).
* Each item is an ordinary program call (:func:`programs.calls.call_program`): it takes a slot
  of the program's limiter like any other request, so a batch never gets past the program's
  ``max_concurrent``; at most ``max_concurrency`` items of a batch run at once (default
  :data:`DEFAULT_CONCURRENCY`, never more than the program's limit). An item refused for capacity
  reports ``status`` 429 in its slot.
* More than ``server.max_batch_items`` items: 413 before anything runs.
* ``X-Program-Version`` is the whole request's: an unknown version or alias is one 404
  ``{"detail": ...}`` naming it, before any item runs.
* Each item gets its own telemetry record, request id ``<request id>.<index>``.
"""

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import Router
from pydantic import BaseModel, ConfigDict, Field, SkipValidation, ValidationError, create_model
from pydantic_core import to_json

from programs.calls import call_program, report_rejected
from programs.context import REQUEST_ID_HEADER, VERSION_HEADER, request_id
from programs.execution import CallFailed, classify
from programs.program import Program, UnknownVersion, VersionAsk, check_version
from programs.responses import VERSION_PARAMETER, ErrorBody, refusal_responses
from programs.runtime import Runtime
from programs.schemas import with_body_model

DEFAULT_CONCURRENCY = 8


def batch_models(program: Program) -> tuple[type[BaseModel], type[BaseModel]]:
    """Request and response models of a program's batch route (documented in the OpenAPI)."""
    item = program.inputs.model
    request = create_model(
        f"{program.name}BatchRequest",
        __config__=ConfigDict(extra="forbid"),
        # Items are validated one by one in the view (a bad item fails its slot, not the batch);
        # SkipValidation keeps the item schema in the OpenAPI document.
        inputs=(list[SkipValidation[item]], Field(description=f"{program.name} inputs, one object each")),  # type: ignore[valid-type]
        max_concurrency=(
            int | None,
            Field(
                default=None, ge=1, description="Items run at once (default 8, capped by the program's limit)"
            ),
        ),
    )
    ok = create_model(
        f"{program.name}BatchSuccess", ok=(Literal[True], ...), outputs=(program.outputs.model, ...)
    )
    failed = create_model(
        f"{program.name}BatchFailure",
        ok=(Literal[False], ...),
        error=(str, ...),
        status=(int, Field(description="the status a single call would have answered")),
        error_type=(str | None, None),
        errors=(list[dict[str, Any]] | None, Field(default=None, description="validation errors (422)")),
    )
    response = create_model(f"{program.name}BatchResponse", results=(list[ok | failed], ...))  # type: ignore[valid-type]
    return request, response


def add_batch_route(router: Router, runtime: Runtime, program: Program, **options: Any) -> None:
    request_model, response_model = batch_models(program)
    router.add_api_operation(
        f"/{program.name}/batch",
        ["POST"],
        _batch_view(runtime, program, request_model),
        response={**refusal_responses(response_model), 404: ErrorBody},  # 404: an unknown X-Program-Version
        operation_id=f"{program.name}_batch",
        openapi_extra={"parameters": [VERSION_PARAMETER]},  # every item asks for it
        summary=f"Run {program.name} on many inputs (concurrently, answers in input order)",
        description=__doc__,
        tags=["batch"],
        **options,
    )


def _batch_view(
    runtime: Runtime, program: Program, request_model: type[BaseModel]
) -> Callable[..., Awaitable[HttpResponse]]:
    async def view(request: HttpRequest, payload: Any) -> HttpResponse:
        rid = request_id(request)
        items: list[Any] = payload.inputs
        asked = VersionAsk(request.headers.get(VERSION_HEADER), request.headers)
        answered: set[str] = set()  # the versions that answered items (several under a split)
        limit = runtime.config.config.server.max_batch_items
        try:
            check_version(program, asked.asked, asked.headers)
        except UnknownVersion as exc:
            refused: HttpResponse | None = classify(program, exc).response()
        else:
            refused = None
        if refused is not None:
            response: HttpResponse = refused
        elif len(items) > limit:
            detail = f"{len(items)} items in one batch; at most {limit} (server.max_batch_items)"
            response = JsonResponse({"detail": detail, "program": program.name}, status=413)
        else:
            concurrency = min(payload.max_concurrency or DEFAULT_CONCURRENCY, program.limiter.limit)
            gate = asyncio.Semaphore(concurrency)

            async def one(index: int, item: Any) -> bytes:
                async with gate:
                    return await run_item(program, item, f"{rid}.{index}", asked, answered)

            parts = await asyncio.gather(*(one(index, item) for index, item in enumerate(items)))
            body = b'{"results":[' + b",".join(parts) + b"]}"
            response = HttpResponse(body, content_type="application/json")
        response[REQUEST_ID_HEADER] = rid
        if answered:
            response[VERSION_HEADER] = ", ".join(sorted(answered))
        return response

    return with_body_model(view, request_model, f"batch_{program.name}")


async def run_item(
    program: Program,
    item: Any,
    rid: str,
    asked: VersionAsk | None = None,
    answered: set[str] | None = None,
    *,
    source: str = "batch",
    entry: str = "",
    version: str | None = None,
) -> bytes:
    """One item's slot, as JSON bytes: validate, call, map the failure (the batch's items and the
    jobs' items both). Never raises for a failure of the item itself.

    ``asked``: the batch's version question (every item asks it), else ``version`` (a job's);
    ``answered`` collects the versions that answered."""
    try:
        payload = program.inputs.model.model_validate(item)
    except ValidationError as exc:
        errors = json.loads(exc.json(include_url=False, include_input=False))
        raw = json.dumps(item).encode()  # escapes what to_json cannot encode (lone surrogates)
        report_rejected(
            program, status=422, error_type="ValidationError", detail=errors, inputs=raw, source=source,
            entry=entry, request_id=rid,
        )  # fmt: skip
        return _failure(422, _summary(errors), "ValidationError", errors)
    kwargs = program.inputs.to_kwargs(payload)
    try:
        result = await call_program(
            program, kwargs, source=source, entry=entry, request_id=rid, raw_inputs=to_json(item),
            version=asked.asked if asked else version, headers=asked.headers if asked else None,
        )  # fmt: skip
    except CallFailed as failure:
        if answered is not None and failure.version:
            answered.add(failure.version)
        return _failure(failure.status, failure.detail, failure.error_type)
    if answered is not None and result.version:
        answered.add(result.version)
    return b'{"ok":true,"outputs":' + result.body + b"}"


def _failure(status: int, error: str, error_type: str, errors: list[Any] | None = None) -> bytes:
    slot: dict[str, Any] = {"ok": False, "error": error, "status": status, "error_type": error_type}
    if errors is not None:
        slot["errors"] = errors
    return to_json(slot)


def _summary(errors: list[dict[str, Any]]) -> str:
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "item"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"Invalid input: {where}: {first.get('msg', 'invalid')}{more}"
