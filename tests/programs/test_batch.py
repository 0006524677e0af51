"""``POST /{Program}/batch`` over a real socket: order, partial failure, concurrency, the item limit."""

import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.support import Running

pytestmark = pytest.mark.integration


def batch(server: Running, program: str, items: list[Any], **extra: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/{program}/batch", json={"inputs": items, **extra}, timeout=60)


def mock_stats(llm: Running) -> dict[str, int]:
    return httpx.get(f"{llm.url}/stats").json()


def mock_requests(llm: Running) -> list[dict[str, Any]]:
    return httpx.get(f"{llm.url}/requests").json()["requests"]


def test_results_come_back_in_input_order(devx_server: Running) -> None:
    tag = uuid.uuid4().hex[:8]
    # The first items are the slowest: they finish last but must stay first.
    questions = [f"q{i} {tag} [delay={400 - 100 * i}]" for i in range(5)]
    response = batch(devx_server, "EchoAsync", [{"question": q} for q in questions], max_concurrency=5)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["ok"] for r in results] == [True] * 5
    assert [r["outputs"]["answer"] for r in results] == [f"Echo: {q}" for q in questions]
    assert response.headers["x-request-id"]


def test_one_failing_item_does_not_fail_the_batch(devx_server: Running) -> None:
    tag = uuid.uuid4().hex[:8]
    items = [
        {"question": f"fine {tag}"},
        {"question": f"upstream breaks {tag} [fault=500]"},
        {"not_a_field": 1},
        "not an object",
        {"question": f"also fine {tag}"},
    ]
    response = batch(devx_server, "EchoSync", items)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0] == {"ok": True, "outputs": {"answer": f"Echo: fine {tag}"}}
    assert results[1]["ok"] is False
    assert results[1]["status"] == 502
    assert "Upstream LLM error" in results[1]["error"]
    assert results[2]["ok"] is False
    assert results[2]["status"] == 422
    assert {tuple(error["loc"]) for error in results[2]["errors"]} == {("question",), ("not_a_field",)}
    assert results[3]["status"] == 422
    assert results[4] == {"ok": True, "outputs": {"answer": f"Echo: also fine {tag}"}}


def test_max_concurrency_bounds_the_items_in_flight(devx_server: Running, llm: Running) -> None:
    httpx.post(f"{llm.url}/stats/reset")
    items = [{"question": f"c{i} [delay=250]"} for i in range(5)]
    response = batch(devx_server, "EchoAsync", items, max_concurrency=2)
    assert [r["ok"] for r in response.json()["results"]] == [True] * 5
    stats = mock_stats(llm)
    assert stats["requests"] == 5
    assert stats["peak_in_flight"] == 2  # concurrent, and never more than asked


def test_items_count_against_the_programs_limit(devx_server: Running, llm: Running) -> None:
    # OneAtATime admits one call at a time: a batch asking for 3 at once runs them one by one...
    httpx.post(f"{llm.url}/stats/reset")
    items = [{"topic": f"t{i} [delay=150]"} for i in range(3)]
    response = batch(devx_server, "OneAtATime", items, max_concurrency=3)
    assert [r["ok"] for r in response.json()["results"]] == [True] * 3
    assert mock_stats(llm)["peak_in_flight"] == 1

    # ...and while another request holds the only slot, its items are refused like any call.
    holder = threading.Thread(
        target=httpx.post,
        args=(f"{devx_server.url}/OneAtATime",),
        kwargs={"json": {"topic": "holding the slot [delay=1500]"}, "timeout": 30},
    )
    holder.start()
    try:
        deadline = time.monotonic() + 10
        while mock_stats(llm)["in_flight"] < 1:  # the holder's LM call has started
            assert time.monotonic() < deadline, "the holder never reached the mock"
            time.sleep(0.02)
        refused = batch(devx_server, "OneAtATime", [{"topic": "a"}, {"topic": "b"}]).json()["results"]
    finally:
        holder.join()
    assert [(r["ok"], r["status"], r["error_type"]) for r in refused] == [
        (False, 429, "ConcurrencyLimit")
    ] * 2


def test_each_item_has_its_own_log_record(devx_server: Running) -> None:
    rid = f"batch-{uuid.uuid4().hex[:8]}"
    items = [{"question": "first"}, {"question": "second [fault=500]"}]
    httpx.post(
        f"{devx_server.url}/EchoSync/batch", json={"inputs": items}, headers={"X-Request-ID": rid}, timeout=30
    )
    deadline = time.monotonic() + 15
    while True:
        logs = httpx.get(f"{devx_server.url}/api/logs/EchoSync", params={"limit": 50}).json()["logs"]
        mine = {log["request_id"]: log for log in logs if log["request_id"].startswith(rid)}
        if len(mine) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert mine[f"{rid}.0"]["status_code"] == 200
    assert mine[f"{rid}.0"]["inputs"] == {"question": "first"}
    assert mine[f"{rid}.1"]["status_code"] == 502
