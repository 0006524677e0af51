"""What the server sends upstream (saved state in the prompt, no response cache, no pool cap) and
what it answers when the upstream LLM fails, in every way the mock LLM can fail."""

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis

from tests.databases import ServerDatabase, server_database
from tests.service_fixtures import SERVICE_PROJECT
from tests.support import FAULT_STATUS, Running, project_config, service
from tests.telemetry.conftest import wait_for

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
        async with httpx.AsyncClient(base_url=server.url, timeout=90, limits=limits) as client:
            requests = [  # answered once all 150 are at the mock together (a cap makes them wait 30 s)
                client.post("/EchoAsync", json={"question": f"wide {i} [gather=150]"}) for i in range(150)
            ]
            return [response.status_code for response in await asyncio.gather(*requests)]

    assert asyncio.run(burst()) == [200] * 150
    assert httpx.get(f"{mock.url}/stats").json()["peak_in_flight"] == 150


# -- every fault of the upstream LLM: its documented answer, capacity back, one log row each --------

UPSTREAM_STATUS = {"500": 500, "429": 429}  # faults whose upstream status the answer names
LIMIT = 8  # each program's max_concurrent, and the sync worker threads: more than the faults
TIMEOUT_S = 2  # every program's request timeout: a stall becomes a 504 after it


@pytest.fixture(scope="module")
def faulty(
    tmp_path_factory: pytest.TempPathFactory, mock: Running
) -> Iterator[tuple[Running, ServerDatabase]]:
    tmp = tmp_path_factory.mktemp("upstream_faults")
    config = project_config(SERVICE_PROJECT, tmp, mock.url)
    env = {
        "DSPY_REQUEST_TIMEOUT_S": str(TIMEOUT_S),
        "DSPY_MAX_CONCURRENT_PER_PROGRAM": str(LIMIT),
        "DSPY_SYNC_WORKER_THREADS": str(LIMIT),
        "TELEMETRY_FLUSH_INTERVAL_S": "0.1",
    }
    with (
        server_database(tmp) as database,
        service(tmp, SERVICE_PROJECT, config, **database.env(), **env) as running,
    ):
        yield running, database


@pytest.fixture(scope="module")
def contract(faulty: tuple[Running, ServerDatabase]) -> schemathesis.BaseSchema:
    """The server's own OpenAPI document, to check each answer against."""
    server, _ = faulty
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


def assert_documented(contract: schemathesis.BaseSchema, path: str, response: httpx.Response) -> None:
    """The status is one the document states for ``POST path``, and the body matches its schema."""
    operation = contract[path]["POST"]
    assert operation.responses.find_by_status_code(response.status_code) is not None, response.status_code
    operation.validate_response(response)  # raises with what does not match


async def post_all(server: Running, calls: list[tuple[str, str, dict[str, Any]]]) -> list[httpx.Response]:
    """POST every (path, request id, body) at once."""
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        requests = [client.post(path, json=body, headers={"X-Request-ID": rid}) for path, rid, body in calls]
        return list(await asyncio.gather(*requests))


def burst(server: Running, program: str, field: str = "question") -> list[httpx.Response]:
    """A full burst: the program's max_concurrent calls at once."""
    calls = [(f"/{program}", f"burst-{uuid.uuid4().hex}", {field: f"after {i}"}) for i in range(LIMIT)]
    return asyncio.run(post_all(server, calls))


def burst_succeeds(server: Running, program: str, field: str = "question") -> None:
    """A full burst is admitted and answered."""
    responses = burst(server, program, field)
    assert [response.status_code for response in responses] == [200] * LIMIT, [r.text for r in responses]


def logged(server: Running, database: ServerDatabase, prefix: str) -> Counter[str]:
    """Request id -> inference log rows, for the ids starting with ``prefix``, once everything
    answered so far is written: the writer keeps the order of its queue, so a marker request sent
    now is written after them."""
    marker = f"{prefix}-marker"
    assert httpx.post(
        f"{server.url}/WhereAmI", json={"tag": "t"}, headers={"X-Request-ID": marker}
    ).is_success
    sql = "SELECT request_id, status_code FROM telemetry_inferencelog WHERE request_id LIKE %s"
    deadline = time.monotonic() + 30
    while not (rows := database.query(sql, (f"{prefix}%",))) or marker not in {rid for rid, _ in rows}:
        assert time.monotonic() < deadline, f"the marker row was not written within 30 s: {rows}"
        time.sleep(0.05)
    return Counter(f"{rid}:{status}" for rid, status in rows if rid != marker)


@pytest.mark.parametrize("program", ["EchoSync", "EchoAsync"])
def test_upstream_faults_answer_as_documented_and_leave_full_capacity(
    faulty: tuple[Running, ServerDatabase], contract: schemathesis.BaseSchema, program: str
) -> None:
    server, database = faulty
    prefix = f"fault-{program}-{uuid.uuid4().hex[:8]}"
    calls = [
        (f"/{program}", f"{prefix}-{fault}", {"question": f"q [fault={fault}]"}) for fault in FAULT_STATUS
    ]

    responses = dict(zip(FAULT_STATUS, asyncio.run(post_all(server, calls)), strict=True))

    for fault, response in responses.items():
        assert response.status_code == FAULT_STATUS[fault], (fault, response.text)
        assert response.headers["content-type"] == "application/json"
        assert_documented(contract, f"/{program}", response)
        body = response.json()
        assert body["program"] == program and body["detail"], body
        if fault in UPSTREAM_STATUS:
            assert body["upstream_status"] == UPSTREAM_STATUS[fault], body
        if fault == "429":  # the provider's rate limit: retry later, as it said
            assert response.headers["retry-after"] == "1"
        else:
            assert "retry-after" not in response.headers
    assert responses["stall"].json()["error_type"] == "Timeout"
    # Every slot, thread and upstream connection came back: a native call's with its answer; a
    # timed-out sync call's when its worker thread has finished (its LM call times out at the same
    # deadline, a moment after the 504 may have been sent), never later than that.
    if program == "EchoAsync":
        burst_succeeds(server, program)
    else:
        wait_for(
            lambda: [r.status_code for r in burst(server, program)] == [200] * LIMIT,
            TIMEOUT_S * 5,
            "the stalled call's thread to give its slot back",
        )
    # One row per request, with the status the client got: none lost, none written twice.
    expected = Counter(f"{prefix}-{fault}:{status}" for fault, status in FAULT_STATUS.items())
    assert logged(server, database, prefix) == expected


def test_upstream_faults_in_streams_and_batch_items(
    faulty: tuple[Running, ServerDatabase], contract: schemathesis.BaseSchema
) -> None:
    """The same faults behind the other doors: a stream's ``error`` event, a batch item's slot."""
    server, database = faulty
    prefix = f"doors-{uuid.uuid4().hex[:8]}"
    streams = [
        ("/Story/stream", f"{prefix}-{fault}", {"topic": f"t [fault={fault}]"}) for fault in FAULT_STATUS
    ]
    items = [{"question": f"q [fault={fault}]"} for fault in FAULT_STATUS] + [{"question": "fine"}]
    batch = ("/EchoAsync/batch", f"{prefix}-batch", {"inputs": items, "max_concurrency": LIMIT})

    *streamed, batched = asyncio.run(post_all(server, [*streams, batch]))

    for fault, response in zip(FAULT_STATUS, streamed, strict=True):
        assert response.status_code == 200 and response.headers["content-type"] == "text/event-stream"
        assert_documented(contract, "/Story/stream", response)  # every event against its schema
        events = [block for block in response.text.split("\n\n") if block]
        assert events[-1] == "data: [DONE]", events
        kind, data = events[-2].split("\n")
        assert kind == "event: error", events
        error = json.loads(data.removeprefix("data: "))
        assert error["status"] == FAULT_STATUS[fault], error
        if fault in UPSTREAM_STATUS:
            assert error["upstream_status"] == UPSTREAM_STATUS[fault], error
    assert batched.status_code == 200
    assert_documented(contract, "/EchoAsync/batch", batched)
    slots = batched.json()["results"]
    assert [slot.get("status") for slot in slots] == [*FAULT_STATUS.values(), None]
    assert slots[-1]["ok"] is True

    burst_succeeds(server, "Story", "topic")
    burst_succeeds(server, "EchoAsync")
    expected = Counter(f"{prefix}-{fault}:{status}" for fault, status in FAULT_STATUS.items())
    expected.update(f"{prefix}-batch.{i}:{status}" for i, status in enumerate(FAULT_STATUS.values()))
    expected.update([f"{prefix}-batch.{len(FAULT_STATUS)}:200"])
    assert logged(server, database, prefix) == expected
