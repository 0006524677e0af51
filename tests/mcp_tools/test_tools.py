"""Programs as MCP tools, served by two gunicorn workers, in both protocol eras the SDK speaks.

Every test talks to ``/mcp`` with the SDK's own client. The service is stateless: a client's
requests land on either worker (the 20 concurrent calls of one session are answered by both).
"""

import asyncio
import json
import uuid
from typing import Any

import anyio
import httpx
import jsonschema
import pytest
from mcp.shared.exceptions import MCPError

from tests.databases import ServerDatabase
from tests.mcp_tools.conftest import ERAS, connect, wait_for_rows
from tests.support import Running

pytestmark = pytest.mark.integration


def listing(server: Running) -> dict[str, dict[str, Any]]:
    programs = httpx.get(f"{server.url}/programs", timeout=30).json()["programs"]
    return {entry["name"]: entry for entry in programs}


def cron_only(entry: dict[str, Any]) -> bool:
    gateways = entry["gateways"]
    return bool(gateways) and all(gateway["type"] == "cron" for gateway in gateways)


@pytest.mark.parametrize("era", [*ERAS, "auto"])  # auto: the SDK's default, a server/discover probe
def test_the_tools_are_the_programs_with_the_schemas_of_their_routes(
    workers: tuple[Running, ServerDatabase], era: str
) -> None:
    server, _ = workers

    async def tools() -> list[Any]:
        async with connect(server, era) as client:
            assert client.protocol_version == ("2025-11-25" if era == "legacy" else "2026-07-28")
            return (await client.list_tools()).tools

    expected = {name: entry for name, entry in listing(server).items() if not cron_only(entry)}
    listed = {tool.name: tool for tool in asyncio.run(tools())}
    assert set(listed) == set(expected)
    for name, tool in listed.items():
        entry = expected[name]
        assert tool.description == (entry["description"] or None)  # the docstring
        assert tool.input_schema == entry["input_schema"]
        assert tool.output_schema == entry["output_schema"]  # objects, all of them: nothing wrapped

    # Defaults, enums and nested types survive, and the $defs they reference resolve.
    typed = listed["Typed"].input_schema
    assert typed["properties"]["count"]["default"] == 3
    assert typed["properties"]["mode"]["enum"] == ["fast", "slow"]
    validator = jsonschema.Draft202012Validator(typed)
    assert validator.is_valid({"name": "n", "address": {"city": "Oslo"}, "window": {"start": 1, "end": 2}})
    assert not validator.is_valid({"name": "n", "address": {"zip_code": "0150"}})  # city is required
    assert not validator.is_valid({"name": "n", "mode": "medium"})


@pytest.mark.parametrize("era", ERAS)
def test_a_sync_and_a_native_async_program_answer_their_own_inputs(
    workers: tuple[Running, ServerDatabase], era: str
) -> None:
    server, _ = workers

    async def calls() -> dict[str, Any]:
        async with connect(server, era) as client:
            return {
                name: await client.call_tool(name, {"question": f"{name} {uuid.uuid4().hex}"})
                for name in ("EchoSync", "EchoAsync")
            }

    for name, result in asyncio.run(calls()).items():
        assert not result.is_error, result
        assert result.structured_content["answer"].startswith(f"Echo: {name} ")
        assert json.loads(result.content[0].text) == result.structured_content

    # The nested inputs reach forward() as the program's own types, as on the HTTP route.
    async def typed() -> Any:
        async with connect(server, era) as client:
            return await client.call_tool("Typed", {"name": "n", "address": {"city": "Oslo"}})

    result = asyncio.run(typed())
    assert result.structured_content["address_type"] == "Address"
    assert result.structured_content["count"] == 3  # the Python default


@pytest.mark.parametrize("era", ERAS)
def test_twenty_concurrent_calls_in_one_session_each_make_one_log_row_with_their_tokens(
    workers: tuple[Running, ServerDatabase], era: str
) -> None:
    server, database = workers
    calls = {
        f"{era}-{i}-{uuid.uuid4().hex[:8]}": ("EchoSync" if i % 2 else "EchoAsync", i + 1) for i in range(20)
    }
    results: dict[str, Any] = {}

    async def call(client: Any, request_id: str) -> None:
        name, prompt_tokens = calls[request_id]
        arguments = {"question": f"{request_id} [usage={prompt_tokens},7] [delay=50]"}
        results[request_id] = await client.call_tool(name, arguments, meta={"request_id": request_id})

    async def session() -> None:
        async with connect(server, era) as client, anyio.create_task_group() as group:
            for request_id in calls:
                group.start_soon(call, client, request_id)

    asyncio.run(session())
    for request_id, result in results.items():
        assert not result.is_error, result
        assert result.structured_content["answer"].startswith(f"Echo: {request_id} ")
        assert result.meta["request_id"] == request_id  # the client's own id, from _meta
    logged = wait_for_rows(database, list(calls))
    for request_id, (name, prompt_tokens) in calls.items():
        row = logged[request_id]
        tokens = {"prompt_tokens": prompt_tokens, "completion_tokens": 7}
        assert row | {"program": name, "source": "mcp", "entry": name, "status_code": 200, **tokens} == row
    assert len({row["worker"] for row in logged.values()}) == 2  # one session, served by both workers


@pytest.mark.parametrize("era", ERAS)
def test_a_bad_argument_is_a_tool_error_naming_the_field(
    workers: tuple[Running, ServerDatabase], era: str
) -> None:
    server, database = workers
    request_id = f"bad-{era}-{uuid.uuid4().hex[:8]}"

    async def calls() -> list[Any]:
        async with connect(server, era) as client:
            results = [
                await client.call_tool(
                    "Typed", {"name": "n", "count": "many"}, meta={"request_id": request_id}
                ),
                await client.call_tool("Typed", {"count": 2}),
                await client.call_tool("EchoAsync", {"question": "q", "bogus": 1}),
            ]
            with pytest.raises(MCPError, match="Unknown tool: Nope"):
                await client.call_tool("Nope", {})
            # The session goes on after every one of them.
            results.append(await client.call_tool("EchoAsync", {"question": "after"}))
            return results

    count, missing, extra, after = asyncio.run(calls())
    for result, field in ((count, "count"), (missing, "name"), (extra, "bogus")):
        assert result.is_error, result
        text = result.content[0].text
        assert text.startswith(
            f"Invalid arguments for {'EchoAsync' if field == 'bogus' else 'Typed'}: {field}: "
        )
    assert "valid integer" in count.content[0].text
    assert "Field required" in missing.content[0].text
    assert not after.is_error and after.structured_content["answer"] == "Echo: after"
    row = wait_for_rows(database, [request_id])[request_id]  # a 422 row, as on the HTTP route
    assert (
        row | {"status_code": 422, "source": "mcp", "entry": "Typed", "error_type": "ValidationError"} == row
    )


@pytest.mark.parametrize("era", ERAS)
def test_the_listing_and_each_schema_read_back_as_resources(
    workers: tuple[Running, ServerDatabase], era: str
) -> None:
    server, _ = workers

    async def read() -> tuple[list[str], list[str], str, str]:
        async with connect(server, era) as client:
            resources = [str(resource.uri) for resource in (await client.list_resources()).resources]
            templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
            programs = (await client.read_resource("dspy://programs")).contents[0].text
            schema = (await client.read_resource("dspy://programs/Typed/schema")).contents[0].text
            with pytest.raises(MCPError, match="Unknown resource"):
                await client.read_resource("dspy://programs/Nope/schema")
            return resources, templates, programs, schema

    resources, templates, programs, schema = asyncio.run(read())
    entries = listing(server)
    assert resources == ["dspy://programs", *(f"dspy://programs/{name}/schema" for name in entries)]
    assert templates == ["dspy://programs/{name}/schema"]
    assert json.loads(programs) == {"programs": list(entries.values())}
    assert json.loads(schema) == entries["Typed"]


def test_a_client_of_an_older_revision_without_the_sdk(workers: tuple[Running, ServerDatabase]) -> None:
    """2025-03-26, as a hand-written client speaks it: initialize, then calls without a session."""
    server, _ = workers
    headers = {"Accept": "application/json, text/event-stream"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
        hello = http.post(
            "/mcp",
            json={
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-03-26", "capabilities": {},
                           "clientInfo": {"name": "by-hand", "version": "0"}},
            },
        )  # fmt: skip
        assert hello.status_code == 200, hello.text
        assert hello.json()["result"]["protocolVersion"] == "2025-03-26"
        assert "mcp-session-id" not in hello.headers  # stateless: any worker answers the next request
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert http.post("/mcp", json=initialized).status_code == 202
        call = {"name": "EchoSync", "arguments": {"question": "old client"}}
        answer = http.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call})
    assert answer.status_code == 200, answer.text
    result = answer.json()["result"]
    assert json.loads(result["content"][0]["text"]) == {"answer": "Echo: old client"}


def test_get_is_405_as_a_stateless_server_opens_no_event_stream(
    workers: tuple[Running, ServerDatabase],
) -> None:
    server, _ = workers
    response = httpx.get(f"{server.url}/mcp", headers={"Accept": "text/event-stream"}, timeout=30)
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert "stateless" in response.json()["detail"]
