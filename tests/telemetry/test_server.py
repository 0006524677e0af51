"""Telemetry end to end: the real server (uvicorn) over sockets, the mock LLM, a real database.

Rows are read straight from the server's database. "After a flush" is a graceful stop (SIGTERM,
which runs the ASGI lifespan shutdown) or a poll for a condition with a deadline.
"""

import asyncio
import json
from collections import Counter
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.databases import ServerDatabase
from tests.support import Running
from tests.telemetry.conftest import (
    COMPLETION_PRICE,
    PROMPT_PRICE,
    graceful_stop,
    log_rows,
    metrics,
    total_calls,
    wait_for,
)

pytestmark = pytest.mark.integration


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value  # SQLite text, PostgreSQL jsonb


def _post(server: Running, path: str, request_id: str, **kwargs: Any) -> httpx.Response:
    headers = {"X-Request-ID": request_id, **kwargs.pop("headers", {})}
    return httpx.post(f"{server.url}{path}", headers=headers, timeout=30, **kwargs)


def _concurrently(server: Running, requests: list[tuple[str, str, dict[str, Any]]]) -> list[httpx.Response]:
    """POST (path, request id, json body) all at once, each on its own connection if need be."""

    async def scenario() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
            return await asyncio.gather(
                *(client.post(path, json=body, headers={"X-Request-ID": rid}) for path, rid, body in requests)
            )

    return asyncio.run(scenario())


def test_every_finished_request_has_exactly_one_row(database: ServerDatabase, start_server: Any) -> None:
    cases = [  # (request id, path, expected status, request kwargs)
        ("ok-sync", "/EchoSync", 200, {"json": {"question": "a [usage=11,3]"}}),
        ("ok-async", "/EchoAsync", 200, {"json": {"question": "b [usage=1000,500]"}}),
        ("ok-no-llm", "/WhereAmI", 200, {"json": {"tag": "t"}}),
        ("invalid", "/EchoAsync", 422, {"json": {"question": 5}}),
        (
            "bad-json",
            "/EchoSync",
            400,
            {"content": b"{oops", "headers": {"content-type": "application/json"}},
        ),
        ("too-big", "/EchoSync", 413, {"json": {"question": "x" * 10_000}}),
        ("crash", "/Crashes", 500, {"json": {"question": "boom"}}),
        ("upstream", "/EchoSync", 502, {"json": {"question": "f [fault=500]"}}),
        ("timeout", "/SlowAsync", 504, {"json": {"question": "s [fault=stall]"}}),
    ]
    with start_server(database, MAX_BODY_BYTES="4096") as server:
        for rid, path, status, kwargs in cases:
            response = _post(server, path, rid, **kwargs)
            assert response.status_code == status, (rid, response.text)
        assert _post(server, "/NoSuchProgram", "unknown", json={}).status_code == 404
        at_capacity = [("/SlowAsync", f"busy-{i}", {"question": f"{i} [delay=800]"}) for i in range(2)]
        statuses = {
            r.request.headers["x-request-id"]: r.status_code for r in _concurrently(server, at_capacity)
        }
        assert sorted(statuses.values()) == [200, 429]  # SlowAsync admits one call at a time
        assert graceful_stop(server), server.log()

    rows = database.query(
        "SELECT request_id, program, status_code, success, error_type, prompt_tokens, completion_tokens, "
        "cost_usd, inputs, outputs, duration_ms FROM telemetry_inferencelog"
    )
    expected = [rid for rid, *_ in cases] + list(statuses)
    assert Counter(row[0] for row in rows) == Counter(expected)  # exactly one each; none for the 404
    by_id = {row[0]: row for row in rows}
    for rid, path, status, _ in cases:
        assert by_id[rid][1] == path.strip("/") and by_id[rid][2] == status, by_id[rid]
        assert bool(by_id[rid][3]) is (status == 200)

    for rid, status in statuses.items():
        assert by_id[rid][2] == status
        assert by_id[rid][4] == ("ConcurrencyLimit" if status == 429 else "")
        assert (by_id[rid][10] is None) is (status == 429)  # refused at once: not a latency sample
    assert by_id["ok-sync"][5:8] == (11, 3, None)  # an unpriced model: cost unknown, not 0
    assert by_id["ok-async"][5:7] == (1000, 500)
    assert by_id["ok-async"][7] == pytest.approx(1000 * PROMPT_PRICE + 500 * COMPLETION_PRICE)
    assert _json(by_id["ok-sync"][8]) == {"question": "a [usage=11,3]"}
    assert _json(by_id["ok-async"][9])["answer"].startswith("Echo: b")
    assert by_id["ok-no-llm"][8] is None and by_id["ok-no-llm"][9] is None  # capture_io: false
    assert by_id["invalid"][10] is None  # refused before the program ran: not timed
    assert {by_id[rid][4] for rid in ("timeout", "upstream", "crash", "invalid")} == {
        "Timeout", "LMServerError", "ValueError", "ValidationError",
    }  # fmt: skip
    [(upstream_message,)] = database.query(
        "SELECT error_message FROM telemetry_inferencelog WHERE request_id = 'upstream'"
    )
    assert "HTTP 500 (LMServerError): mock upstream failure" in upstream_message  # the provider's text


def test_tokens_per_row_match_the_mock_under_200_concurrent_requests(
    database: ServerDatabase, start_server: Any
) -> None:
    usage = {f"c{i}": (1000 + i, 7 + 3 * i) for i in range(200)}
    requests = [
        ("/EchoSync" if i % 2 else "/EchoAsync", rid, {"question": f"{rid} [usage={p},{c}] [delay=50]"})
        for i, (rid, (p, c)) in enumerate(usage.items())
    ]
    with start_server(database) as server:
        responses = _concurrently(server, requests)
        assert [r.status_code for r in responses] == [200] * 200
        wait_for(lambda: log_rows(database) == 200, 60, "200 rows")
        body = metrics(server)
        listing = {entry["program"]: entry for entry in body["programs"]}
        assert body["telemetry"]["dropped"] == 0
        exposition = httpx.get(f"{server.url}/metrics", timeout=30).text

    rows = database.query(
        "SELECT request_id, program, prompt_tokens, completion_tokens, total_tokens, cost_usd, lm_calls "
        "FROM telemetry_inferencelog"
    )
    assert len(rows) == 200
    for rid, program, prompt, completion, total, cost, calls in rows:
        expected = usage[rid]
        assert (prompt, completion, total) == (*expected, sum(expected)), rid
        (call,) = _json(calls)
        assert (call["prompt_tokens"], call["completion_tokens"]) == expected
        if program == "EchoAsync":
            assert cost == pytest.approx(expected[0] * PROMPT_PRICE + expected[1] * COMPLETION_PRICE), rid
        else:
            assert cost is None, rid

    for program, parity in (("EchoAsync", 0), ("EchoSync", 1)):
        mine = [usage[rid] for i, rid in enumerate(usage) if i % 2 == parity]
        assert listing[program]["call_count"] == 100
        assert listing[program]["total_prompt_tokens"] == sum(p for p, _ in mine)
        assert listing[program]["total_completion_tokens"] == sum(c for _, c in mine)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }
    prompt_total = sum(value for (name, labels), value in samples.items()
                       if name == "dspy_lm_tokens_total" and ("type", "prompt") in labels)  # fmt: skip
    assert prompt_total == sum(p for p, _ in usage.values())
    key = ("dspy_requests_total", (("outcome", "success"), ("program", "EchoSync"), ("version", "v1")))
    assert samples[key] == 100


def test_counters_survive_a_restart(database: ServerDatabase, start_server: Any) -> None:
    with start_server(database) as first:
        for i in range(7):
            assert (
                _post(first, "/EchoSync", f"before-{i}", json={"question": f"q{i} [usage=2,1]"}).status_code
                == 200
            )
        assert graceful_stop(first), first.log()

    with start_server(database) as second:
        # Before any request: the database totals, and this process's counters rebuilt from them.
        assert total_calls(second) == 7
        assert total_calls(second, scope="process") == 7
        process = {e["program"]: e for e in metrics(second, "process")["programs"]}["EchoSync"]
        assert process["total_tokens"] == 21 and process["p95_latency_ms"] is not None
        for i in range(3):
            assert _post(second, "/EchoSync", f"after-{i}", json={"question": "again"}).status_code == 200
        assert total_calls(second, scope="process") == 10  # live, at once
        wait_for(lambda: total_calls(second) == 10, 30, "the database totals to reach 10")


def test_a_database_outage_during_load_loses_no_records(database: ServerDatabase, start_server: Any) -> None:
    env = {"SQLITE_BUSY_TIMEOUT_MS": "100", "DB_POOL_TIMEOUT_S": "1"}
    requests = [("/EchoAsync", f"o{i}", {"question": f"o{i} [usage=5,{i}]"}) for i in range(60)]
    with start_server(database, **env) as server:

        def writer() -> dict[str, Any]:
            return metrics(server, "process")["telemetry"]  # answered from memory, no database read

        with database.outage():
            responses = _concurrently(server, requests)
            assert [r.status_code for r in responses] == [200] * 60  # serving never waits on the database
            wait_for(lambda: writer()["write_errors"] >= 2, 60, "the writer to hit the outage")
            assert writer()["written"] == 0
        wait_for(lambda: log_rows(database) == 60, 90, "every record written once the database is back")
        assert writer()["dropped"] == 0
        wait_for(lambda: total_calls(server) == 60, 30, "the aggregates")
    assert sorted(
        row[0] for row in database.query("SELECT request_id FROM telemetry_inferencelog")
    ) == sorted(rid for _, rid, _ in requests)


def test_the_writer_flushes_on_shutdown(database: ServerDatabase, start_server: Any) -> None:
    # Nothing is written before shutdown: one batch, due in an hour.
    env = {"TELEMETRY_FLUSH_INTERVAL_S": "3600", "TELEMETRY_BATCH_SIZE": "100000"}
    with start_server(database, **env) as server:
        responses = _concurrently(server, [("/EchoSync", f"s{i}", {"question": f"s{i}"}) for i in range(30)])
        assert all(r.status_code == 200 for r in responses)
        assert metrics(server, "process")["telemetry"]["queue_depth"] == 30
        assert log_rows(database) == 0
        assert graceful_stop(server), server.log()
    assert log_rows(database) == 30
    assert database.query("SELECT call_count FROM telemetry_programstats WHERE period_s = 0") == [(30,)]


def test_metrics_and_logs_routes_speak_dspy_clis_contract(
    database: ServerDatabase, start_server: Any
) -> None:
    with start_server(database) as server:
        for rid in ("l1", "l2", "l3"):
            assert _post(server, "/EchoSync", rid, json={"question": f"{rid} [usage=4,2]"}).status_code == 200
        assert _post(server, "/EchoAsync", "l4", json={"question": "x"}).status_code == 200
        wait_for(lambda: total_calls(server) == 4, 30, "4 calls in the aggregates")

        def get(path: str, **params: Any) -> httpx.Response:
            return httpx.get(f"{server.url}{path}", params=params, timeout=30)

        by_calls = get("/api/metrics", sort_by="calls", order="desc").json()["programs"]
        assert [p["program"] for p in by_calls[:2]] == ["EchoSync", "EchoAsync"]
        by_name = [p["program"] for p in get("/api/metrics", sort_by="name", order="asc").json()["programs"]]
        assert by_name == sorted(by_name)
        assert get("/api/metrics", sort_by="popularity").status_code == 422
        detail = get("/api/metrics/EchoSync").json()["metrics"]
        assert (detail["call_count"], detail["total_tokens"]) == (3, 18)
        assert detail["lm_call_breakdown"]["openai/mock-model"]["call_count"] == 3
        assert get("/api/metrics/Nope").status_code == 404

        logs = get("/api/logs/EchoSync", limit=2).json()
        assert logs["count"] == 2 and [entry["request_id"] for entry in logs["logs"]] == ["l3", "l2"]
        assert get("/api/logs/EchoSync", limit=0).status_code == 422
        assert get("/api/logs/Nope").status_code == 404

        exposition = get("/metrics")
        assert exposition.headers["content-type"].startswith("text/plain")
        assert 'dspy_requests_in_flight{program="EchoSync"} 0.0' in exposition.text
        assert "dspy_telemetry_queue_depth" in exposition.text


def test_a_body_nested_too_deep_to_parse_still_gets_its_row(
    database: ServerDatabase, start_server: Any
) -> None:
    """A body nested 10,000 deep is a 400 and a row whose inputs say they could not be parsed; the
    writer isolates nothing and retries nothing (no traceback in the log), and the next request is
    written normally."""
    deep = b'{"question": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    with start_server(database, MAX_BODY_BYTES="100000") as server:
        json_type = {"content-type": "application/json"}
        response = _post(server, "/EchoSync", "deep", content=deep, headers=json_type)
        assert response.status_code == 400, response.text
        assert _post(server, "/EchoSync", "after", json={"question": "x"}).status_code == 200
        wait_for(lambda: log_rows(database) == 2, 30, "both rows")
        assert metrics(server, "process")["telemetry"]["dropped"] == 0
        assert "Traceback" not in server.log()
    rows = dict(database.query("SELECT request_id, inputs FROM telemetry_inferencelog"))
    stored = _json(rows["deep"])
    assert set(stored) == {"_unparsed"} and stored["_unparsed"].startswith('{"question": [[[')
    assert _json(rows["after"]) == {"question": "x"}
