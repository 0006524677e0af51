"""``/mcp`` with API keys on, its Host/Origin check, and the call path's refusals as tool errors."""

import asyncio
import json
import time
import uuid
from typing import Any

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

from tests.databases import ServerDatabase
from tests.mcp_tools.conftest import ERAS, MCP_HOST, connect, manage, wait_for_rows
from tests.support import Running

pytestmark = pytest.mark.integration

Keyed = tuple[Running, ServerDatabase, str]
INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {},
               "clientInfo": {"name": "t", "version": "0"}},
}  # fmt: skip
ACCEPT = {"Accept": "application/json, text/event-stream"}


def post(server: Running, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{server.url}/mcp", json=INITIALIZE, headers={**ACCEPT, **headers}, timeout=30)


def test_without_a_valid_key_it_is_401_with_www_authenticate(keyed: Keyed) -> None:
    server, _, key = keyed
    for headers in ({}, {"Authorization": f"Bearer dsk_00000000_{uuid.uuid4().hex}"}, {"Authorization": key}):
        response = post(server, headers)
        assert response.status_code == 401, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in response.json()["detail"]
    assert post(server, {"Authorization": f"Bearer {key}"}).status_code == 200

    async def without_key(era: str) -> None:
        async with connect(server, era) as client:
            await client.list_tools()

    for era in ERAS:  # the SDK's client gets no further than its first request
        with pytest.raises(ExceptionGroup) as refused:
            asyncio.run(without_key(era))
        assert refused.group_contains(MCPError, match="error response")


def test_a_key_without_the_invoke_scope_is_403(keyed: Keyed) -> None:
    server, database, _ = keyed
    reader = manage(database, "apikey", "create", f"reader-{uuid.uuid4().hex[:6]}", "--scopes", "read")
    deadline = time.monotonic() + 10
    while (response := post(server, {"Authorization": f"Bearer {reader}"})).status_code == 401:
        assert time.monotonic() < deadline, "the new key was never loaded"  # API_KEY_MISS_RELOAD_S 0.2
        time.sleep(0.05)
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/json"
    assert "`invoke` scope" in response.json()["detail"]
    admin = manage(database, "apikey", "create", f"admin-{uuid.uuid4().hex[:6]}", "--scopes", "admin")
    deadline = time.monotonic() + 10
    while (response := post(server, {"Authorization": f"Bearer {admin}"})).status_code == 401:
        assert time.monotonic() < deadline, "the new key was never loaded"
        time.sleep(0.05)
    assert response.status_code == 200, response.text  # admin may do everything


@pytest.mark.parametrize("era", ERAS)
def test_each_tool_call_is_recorded_with_the_key_that_made_it(keyed: Keyed, era: str) -> None:
    server, database, key = keyed
    request_id = f"keyed-{era}-{uuid.uuid4().hex[:8]}"

    async def call() -> Any:
        async with connect(server, era, key) as client:
            return await client.call_tool(
                "EchoAsync", {"question": "who [usage=4,2]"}, meta={"request_id": request_id}
            )

    result = asyncio.run(call())
    assert not result.is_error and result.structured_content["answer"] == "Echo: who [usage=4,2]"
    row = wait_for_rows(database, [request_id])[request_id]
    assert row["api_key_name"].startswith("mcp-client (dsk_")
    assert row | {"source": "mcp", "entry": "EchoAsync", "prompt_tokens": 4, "completion_tokens": 2} == row


def test_host_and_origin_follow_allowed_hosts_and_the_mcp_settings(keyed: Keyed) -> None:
    server, _, key = keyed
    auth = {"Authorization": f"Bearer {key}"}
    refused = post(server, {**auth, "Host": "evil.example.com"})
    assert refused.status_code == 421 and refused.json() == {"detail": "Invalid Host header"}
    refused = post(server, {**auth, "Origin": "https://evil.example.com"})
    assert refused.status_code == 403 and refused.json() == {"detail": "Invalid Origin header"}
    assert post(server, {**auth, "Host": MCP_HOST}).status_code == 200  # MCP_ALLOWED_HOSTS
    local = {"Host": "localhost:9999", "Origin": "http://localhost:6274"}  # ALLOWED_HOSTS, any port
    assert post(server, {**auth, **local}).status_code == 200
    assert post(server, {"Host": MCP_HOST}).status_code == 401  # a known host still needs a key


def mock_saw(mock: Running, marker: str) -> bool:
    recorded = httpx.get(f"{mock.url}/requests", timeout=30).json()["requests"]
    return any(marker in json.dumps(body) for body in recorded)


def test_a_full_program_is_a_tool_error_that_says_when_to_retry(keyed: Keyed, mock: Running) -> None:
    """EchoSync admits one call at a time here: a second one while the first runs is refused."""
    server, _, key = keyed
    marker = uuid.uuid4().hex

    async def scenario() -> tuple[Any, Any]:
        async with connect(server, "2026-07-28", key) as client:
            first: list[Any] = []

            async def occupy() -> None:
                first.append(await client.call_tool("EchoSync", {"question": f"{marker} [delay=3000]"}))

            async with anyio.create_task_group() as group:
                group.start_soon(occupy)
                deadline = time.monotonic() + 30
                while not await anyio.to_thread.run_sync(mock_saw, mock, marker):  # the first is running
                    assert time.monotonic() < deadline, "the first call never reached the LLM"
                    await anyio.sleep(0.05)
                second = await client.call_tool("EchoSync", {"question": "second"})
            return first[0], second

    first, second = asyncio.run(scenario())
    assert not first.is_error, first
    assert second.is_error
    text = second.content[0].text
    assert text.startswith("ConcurrencyLimit (429): EchoSync is at capacity")
    assert text.endswith("Retry after 1 s.")
    assert (second.meta["status"], second.meta["retry_after"]) == (429, 1)


def test_timeouts_and_upstream_failures_are_tool_errors(keyed: Keyed) -> None:
    server, database, key = keyed
    ids = [f"slow-{uuid.uuid4().hex[:8]}", f"fault-{uuid.uuid4().hex[:8]}"]

    async def calls() -> list[Any]:
        async with connect(server, "legacy", key) as client:
            return [
                await client.call_tool(
                    "SlowAsync", {"question": "[delay=3000]"}, meta={"request_id": ids[0]}
                ),
                await client.call_tool("EchoAsync", {"question": "[fault=500]"}, meta={"request_id": ids[1]}),
            ]

    slow, fault = asyncio.run(calls())
    assert slow.is_error and slow.content[0].text == "Timeout (504): SlowAsync did not finish within 1.5 s"
    upstream = (
        "LMServerError (502): Upstream LLM error from mock: HTTP 500 (LMServerError) (upstream status 500)"
    )
    # the provider's own text ("mock upstream failure") stays in the log row
    assert fault.is_error and fault.content[0].text == upstream
    assert fault.meta["upstream_status"] == 500
    logged = wait_for_rows(database, ids)
    assert [logged[request_id]["status_code"] for request_id in ids] == [504, 502]
