"""What the routes answer besides their outputs, as the OpenAPI document states it.

Generated clients and contract tests (tests/e2e/test_openapi_conformance.py) take the
document at its word, so every status a route can answer is declared with the body it really
sends: :class:`ErrorBody` for every error but 422, :class:`ValidationErrorBody` for django-ninja's
422, the ``Retry-After`` header of 429 and 503, and the Server-Sent Events of ``/{Program}/stream``
event by event (:func:`sse_content`).

Server-Sent Events in OpenAPI 3.1: the ``schema`` of ``text/event-stream`` describes one event as
parsed by an EventSource (``{"event": ..., "data": "<text>"}``; OpenAPI 3.2 calls this
``itemSchema``), and each event's JSON ``data`` is described with ``contentMediaType`` and
``contentSchema``. Schemathesis validates streams this way.
"""

from typing import Any, Literal

from ninja.schema import NinjaGenerateJsonSchema
from pydantic import BaseModel, Field, create_model
from pydantic.json_schema import models_json_schema

from programs.program import Program

# Where the definitions of hand-written response schemas go: dspysite.openapi moves each
# schema's "$defs" into the document's components, where these references point.
REF_TEMPLATE = "#/components/schemas/{model}"
DONE = "[DONE]"


class ErrorBody(BaseModel):
    """Every error answer but 422: what went wrong and, for a program call, which program and why."""

    detail: str
    error_type: str | None = None
    program: str | None = None
    upstream_status: int | None = None


class ValidationIssue(BaseModel):
    type: str
    loc: list[str | int]
    msg: str
    ctx: dict[str, Any] | None = None


class ValidationErrorBody(BaseModel):
    """django-ninja's 422: one issue per invalid field, with its location (``["body", ...]``)."""

    detail: list[ValidationIssue]


class StreamChunk(BaseModel):
    """``event: chunk``: a piece of one output field, as the LM writes it."""

    type: Literal["chunk"]
    predictor: str
    field: str
    chunk: str
    last: bool


class StreamError(ErrorBody):
    """``event: error``: the call failed once streaming; ``status`` is what POST /{Program} answers."""

    type: Literal["error"]
    status: int


class Alive(BaseModel):
    status: Literal["alive"]


class Ready(BaseModel):
    status: Literal["ready"]
    programs: int


class LoadFailure(BaseModel):
    module: str
    programs: list[str]
    error: str


class NotReady(BaseModel):
    """503 from ``/health/ready``: shutting down (``draining``), or programs that failed to load."""

    status: Literal["draining", "not ready"]
    failed: list[LoadFailure] | None = None


class GatewayInfo(BaseModel):
    """One of a program's gateways: an API route (``type: api``) or a schedule (``type: cron``)."""

    name: str
    type: Literal["api", "cron"] | None = None
    schedule: str | None = None
    method: str | None = None
    path: str | None = None
    requires_auth: bool | None = None


class ProgramInfo(BaseModel):
    name: str
    endpoint: str | None = Field(description="POST route of the program's inputs; null: gateways only")
    model: str
    execution: Literal["sync", "async"]
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    gateways: list[GatewayInfo]
    versions: list[str] | None = Field(
        default=None, description="the program's versions, oldest first (when versions are on)"
    )
    aliases: dict[str, dict[str, Any]] | None = Field(
        default=None, description="alias -> its target: {version} or {split, sticky}, maybe with shadow"
    )


class ProgramListing(BaseModel):
    programs: list[ProgramInfo]


# A refused or failed program call: 429 and 503 say when to retry.
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "required": True,
        "schema": {"type": "integer"},
    }
}
REQUEST_ID = {
    "X-Request-ID": {
        "description": "The request id (the client's, when well-formed)",
        "schema": {"type": "string"},
    }
}


VERSION = {
    "X-Program-Version": {
        "description": "The program version that answered (`v3`), when the program has versions",
        "schema": {"type": "string"},
    }
}
# The version a caller asks for (docs/VERSIONS.md); absent: production.
VERSION_PARAMETER = {
    "name": "X-Program-Version",
    "in": "header",
    "required": False,
    "description": "A version (`v3`) or an alias name (`staging`); absent: `production`. Unknown: 404",
    "schema": {"type": "string"},
}


def call_responses(ok: Any) -> dict[Any, Any]:
    """``response=`` of ``POST /{Program}``: its outputs, or an error of the call (404: an unknown
    ``X-Program-Version``)."""
    return {200: ok, 422: ValidationErrorBody, (400, 404, 413, 429, 500, 502, 503, 504): ErrorBody}


def call_headers() -> dict[str, Any]:
    """``openapi_extra`` of ``POST /{Program}``: the version it may ask for, the headers of its
    answers (status keys are ints, as django-ninja's, so that they merge into its responses
    instead of standing beside them)."""
    return {
        "parameters": [VERSION_PARAMETER],
        "responses": {
            200: {"headers": {**REQUEST_ID, **VERSION}},
            429: {"headers": {**RETRY_AFTER, **REQUEST_ID}},
            503: {"headers": {**RETRY_AFTER, **REQUEST_ID}},
        },
    }


def refusal_responses(ok: Any = None) -> dict[Any, Any]:
    """``response=`` of a route that refuses bad input before anything runs (batch, stream)."""
    refusals: dict[Any, Any] = {422: ValidationErrorBody, (400, 413): ErrorBody}
    return refusals if ok is None else {200: ok, **refusals}


def stream_responses(program: Program) -> dict[str, Any]:
    """``openapi_extra`` of ``POST /{Program}/stream``: its 200, the events one by one."""
    final = create_model(
        f"{program.name}StreamFinal",
        __doc__="``event: final``: the outputs, exactly what POST /{Program} answers.",
        type=(Literal["final"], ...),
        outputs=(program.outputs.model, ...),
    )
    events = {"chunk": StreamChunk, "final": final, "error": StreamError}
    description = "Server-Sent Events: `chunk`s, then `final` (or `error`), then `data: [DONE]`"
    return {
        "parameters": [VERSION_PARAMETER],
        "responses": {200: {"description": description, "content": sse_content(events, done=True)}},
    }


def sse_content(events: dict[str, type[BaseModel]], *, done: bool = False) -> dict[str, Any]:
    """The ``content`` of a Server-Sent Events response: ``event: <name>`` carries JSON ``data`` of
    ``events[name]``; with ``done``, the stream ends with ``data: [DONE]`` (an unnamed event)."""
    keys, definitions = models_json_schema(
        [(model, "serialization") for model in events.values()],
        ref_template=REF_TEMPLATE,
        schema_generator=NinjaGenerateJsonSchema,  # as django-ninja writes the document's other schemas
    )
    variants = [_event(name, keys[(model, "serialization")]) for name, model in events.items()]
    if done:
        variants.append(_event_object({"const": "message"}, {"const": DONE}))
    schema = {"oneOf": variants, **definitions}
    return {"text/event-stream": {"schema": schema}}


def _event(name: str, data_schema: dict[str, Any]) -> dict[str, Any]:
    data = {"type": "string", "contentMediaType": "application/json", "contentSchema": data_schema}
    return _event_object({"const": name}, data)


def _event_object(event: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {"event": event, "data": data, "id": {"type": "string"}, "retry": {"type": "integer"}},
    }
