"""The MCP server: the SDK's low-level ``Server`` with this runtime's tools and resources.

The low-level server takes the schemas as they are (FastMCP would derive them from a function
signature), and every list it answers is built once, at start-up: the programs do not change
while the process runs.
"""

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server

from apikeys.context import Caller, current_caller
from mcp_tools.resources import ProgramResources
from mcp_tools.tools import ToolCatalog
from programs.lm_gates import current_lm_gate
from programs.reservations import bind_lm_gate
from programs.runtime import Runtime

R = TypeVar("R")

# Where the HTTP layer (mcp_tools.endpoint) leaves the caller its API key names, in the scope's state.
CALLER_STATE = "api_caller"
# ... and the key's quota reservation, whose LM-call gate the tool calls run under (programs.reservations).
RESERVATION_STATE = "quota_reservation"

INSTRUCTIONS = (
    "Each tool runs one DSPy program: its arguments are the program's inputs, its structured result "
    "the program's outputs. dspy://programs lists the programs with their models and JSON schemas."
)


def build_server(runtime: Runtime) -> Server[Any]:
    tools = ToolCatalog(runtime)
    resources = ProgramResources(runtime)

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        # The key is recorded on the call's log row (telemetry reads the contextvar).
        scope = current_caller.set(_caller(ctx))
        gate = bind_lm_gate(_state(ctx).get(RESERVATION_STATE))  # tool calls run in the SDK's task
        try:
            return await tools.call(params.name, params.arguments, dict(params.meta or {}))
        finally:
            current_lm_gate.reset(gate)
            current_caller.reset(scope)

    async def read_resource(
        ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        return resources.read(str(params.uri))

    return Server(
        runtime.config.config.app_id,
        instructions=INSTRUCTIONS,
        get_tool_input_schema=tools.input_schema,
        on_list_tools=_always(types.ListToolsResult(tools=tools.listed)),
        on_call_tool=call_tool,
        on_list_resources=_always(types.ListResourcesResult(resources=resources.listed)),
        on_list_resource_templates=_always(
            types.ListResourceTemplatesResult(resource_templates=resources.templates)
        ),
        on_read_resource=read_resource,
    )


def _always(result: R) -> Callable[[ServerRequestContext[Any], Any], Awaitable[R]]:
    """A list handler: one page, the same every time (no cursor: the lists are short)."""

    async def handler(ctx: ServerRequestContext[Any], params: Any) -> R:
        return result

    return handler


def _caller(ctx: ServerRequestContext[Any]) -> Caller | None:
    return _state(ctx).get(CALLER_STATE)


def _state(ctx: ServerRequestContext[Any]) -> dict[str, Any]:
    request = ctx.request  # the Starlette request of this HTTP exchange
    return request.scope.get("state", {}) if request is not None else {}
