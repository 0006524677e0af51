"""One MCP tool per program: the schemas of its HTTP route, its calls through the one call path.

A tool's ``inputSchema`` and ``outputSchema`` are the program's entry of ``GET /programs``, so a
client sees the same contract over both doors. MCP wants an object for ``outputSchema`` (and for
``structuredContent``): a program whose outputs are not one is answered as ``{"result": ...}``.

A call is validated by the program's input model (a bad argument is a tool error naming the
field, and a 422 log row as on the HTTP route), then run by :func:`programs.calls.call_program`
with ``source="mcp"``: the log row, counters and API-key attribution come from there. Every
refusal of the call path (429 at capacity, 503 draining, 504, 502 upstream, 500) is a tool error
(``isError``) whose text says what happened and, when it applies, when to retry: never a protocol
error the model cannot read, never a hang.
"""

from dataclasses import dataclass
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError
from pydantic_core import to_json

from programs.api import program_listing
from programs.calls import call_program, report_rejected
from programs.context import client_request_id, new_request_id
from programs.execution import CallFailed
from programs.gateways import CronGateway
from programs.program import Program
from programs.runtime import Runtime

SOURCE = "mcp"
# The field of the wrapper object around outputs whose schema is not an object.
RESULT_FIELD = "result"
# A call's own request id, when the client sends one: ``"_meta": {"request_id": "..."}``.
REQUEST_ID_META = "request_id"  # well-formed as the HTTP routes' X-Request-ID, else a new id is used
# The program version a call asks for, ``"_meta": {"program_version": "v3"}`` (or an alias name),
# as X-Program-Version on HTTP; the answer's ``_meta`` names the version that answered.
VERSION_META = "program_version"


@dataclass(frozen=True)
class ProgramTool:
    program: Program
    tool: types.Tool
    wrapped: bool  # the outputs are answered as {"result": outputs}


class ToolCatalog:
    """The tools of a runtime, built once: listing them is handing out the same objects."""

    def __init__(self, runtime: Runtime) -> None:
        entries = {entry["name"]: entry for entry in program_listing(runtime)}
        self._tools = {
            program.name: _program_tool(program, entries[program.name])
            for program in runtime.programs.values()
            if not _cron_only(program)
        }
        self.listed = [tool.tool for tool in self._tools.values()]

    def input_schema(self, name: str) -> dict[str, Any] | None:
        """For the SDK's ``Mcp-Param-*`` header check, which otherwise runs ``tools/list`` per call."""
        tool = self._tools.get(name)
        return tool.tool.input_schema if tool is not None else None

    async def call(
        self, name: str, arguments: dict[str, Any] | None, meta: dict[str, Any] | None
    ) -> types.CallToolResult:
        tool = self._tools.get(name)
        if tool is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {name}")
        program = tool.program
        request_id = _request_id(meta)
        try:
            payload = program.inputs.model.model_validate(arguments or {})
        except ValidationError as exc:
            return _invalid_arguments(program, exc, arguments, request_id or new_request_id())
        kwargs = program.inputs.to_kwargs(payload)
        try:
            result = await call_program(
                program, kwargs, source=SOURCE, entry=name, request_id=request_id, version=_version(meta)
            )
        except CallFailed as failure:
            return _failed(failure)
        output = result.output
        answer_meta = {REQUEST_ID_META: result.request_id}
        if result.version:
            answer_meta[VERSION_META] = result.version
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=result.body.decode())],
            structured_content={RESULT_FIELD: output} if tool.wrapped else output,
            meta=answer_meta,
        )


def _cron_only(program: Program) -> bool:
    """A module that only runs on a schedule has no door for callers (dspy-cli serves none)."""
    return bool(program.gateways) and all(isinstance(gateway, CronGateway) for gateway in program.gateways)


def _program_tool(program: Program, entry: dict[str, Any]) -> ProgramTool:
    output_schema, wrapped = _object_schema(entry["output_schema"])
    tool = types.Tool(
        name=program.name,
        description=program.description or None,
        input_schema=entry["input_schema"],
        output_schema=output_schema,
    )
    return ProgramTool(program, tool, wrapped)


def _object_schema(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``schema`` if it describes an object, else an object with one ``result`` of that schema."""
    if schema.get("type") == "object":
        return schema, False
    inner = dict(schema)
    wrapper: dict[str, Any] = {
        "type": "object",
        "properties": {RESULT_FIELD: inner},
        "required": [RESULT_FIELD],
    }
    if "$defs" in inner:  # references are relative to the document's root: keep them there
        wrapper["$defs"] = inner.pop("$defs")
    return wrapper, True


def _request_id(meta: dict[str, Any] | None) -> str | None:
    return client_request_id((meta or {}).get(REQUEST_ID_META))


def _version(meta: dict[str, Any] | None) -> str | None:
    version = (meta or {}).get(VERSION_META)
    return version if isinstance(version, str) and version else None


def _invalid_arguments(
    program: Program, exc: ValidationError, arguments: dict[str, Any] | None, request_id: str
) -> types.CallToolResult:
    errors = exc.errors(include_url=False, include_context=False)
    inputs = to_json(arguments or {}, fallback=str)
    report_rejected(
        program, status=422, error_type="ValidationError", detail=errors, inputs=inputs, source=SOURCE,
        entry=program.name, request_id=request_id,
    )  # fmt: skip
    problems = "; ".join(f"{_location(error['loc'])}: {error['msg']}" for error in errors)
    return _error(
        f"Invalid arguments for {program.name}: {problems}", {REQUEST_ID_META: request_id, "status": 422}
    )


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "arguments"


def _failed(failure: CallFailed) -> types.CallToolResult:
    text = f"{failure.error_type} ({failure.status}): {failure.detail}"
    meta: dict[str, Any] = {REQUEST_ID_META: failure.request_id, "status": failure.status}
    if failure.upstream_status is not None:
        text += f" (upstream status {failure.upstream_status})"
        meta["upstream_status"] = failure.upstream_status
    if failure.retry_after is not None:
        text += f". Retry after {failure.retry_after} s."
        meta["retry_after"] = failure.retry_after
    return _error(text, meta)


def _error(text: str, meta: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True, meta=meta)
