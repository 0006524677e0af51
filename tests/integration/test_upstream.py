"""What the server sends upstream: saved state in the prompt, no response cache, no pool cap."""

import asyncio
import uuid

import httpx
import pytest

from tests.support import Running

pytestmark = pytest.mark.integration


def sent_requests(mock: Running, limit: int) -> list[dict]:
    return httpx.get(f"{mock.url}/requests", params={"limit": limit}).json()["requests"]


def completions(mock: Running) -> int:
    return httpx.get(f"{mock.url}/stats").json()["completions"]


def test_saved_state_beside_the_module_is_loaded(server: Running, mock: Running) -> None:
    question = f"optimized {uuid.uuid4()}"
    assert httpx.post(f"{server.url}/Optimized", json={"question": question}).status_code == 200
    (sent,) = [r for r in sent_requests(mock, 20) if question in str(r["messages"])]
    prompt = str(sent["messages"])
    assert "SAVED-DEMO-QUESTION" in prompt
    assert "SAVED-DEMO-ANSWER" in prompt


def test_identical_requests_both_reach_the_model(server: Running, mock: Running) -> None:
    before = completions(mock)
    body = {"question": f"same question {uuid.uuid4()}"}
    for _ in range(2):
        assert httpx.post(f"{server.url}/EchoAsync", json=body).status_code == 200
    assert completions(mock) - before == 2


def test_more_than_100_upstream_calls_in_flight(server: Running, mock: Running) -> None:
    """DSPy's native engine caps a process at 100 connections per LM unless told otherwise."""
    httpx.post(f"{mock.url}/stats/reset")

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
            requests = [
                client.post("/EchoAsync", json={"question": f"wide {i} [delay=1500]"}) for i in range(150)
            ]
            return [response.status_code for response in await asyncio.gather(*requests)]

    assert asyncio.run(burst()) == [200] * 150
    assert httpx.get(f"{mock.url}/stats").json()["peak_in_flight"] == 150
