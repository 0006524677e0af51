"""Versions over a real socket: registered at start-up, by API and by command; pinned by header
(the prompt carries the version's demos); 404 for an unknown version, 422 for a state that does
not fit, 401/403 for a caller without ``admin``; promote and rollback; the log rows' version."""

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx

from tests.mcp_tools.conftest import connect
from tests.support import Running
from tests.telemetry.conftest import wait_for
from tests.versions.conftest import Served, last_prompt, manage, state_with_demo
from versions.routing import compile_route

P = "Optimized"


def ask(served: Served, headers: dict[str, str], question: str, version: str | None = None) -> httpx.Response:
    extra = {"X-Program-Version": version} if version else {}
    return httpx.post(
        f"{served.url}/{P}", json={"question": question}, headers={**headers, **extra}, timeout=30
    )


def test_the_loaded_state_is_v1_and_production(keyed: Served, admin: dict[str, str], mock: Running) -> None:
    answer = ask(keyed, admin, "which version?")
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Program-Version"] == "v1"
    assert "SAVED-DEMO-QUESTION" in last_prompt(mock)
    listing = httpx.get(f"{keyed.url}/api/programs/{P}/versions", headers=admin).json()["versions"]
    assert listing[0]["version"] == "v1" and listing[0]["aliases"] == ["production"]
    programs = {p["name"]: p for p in httpx.get(f"{keyed.url}/programs", headers=admin).json()["programs"]}
    assert programs[P]["versions"][0] == "v1"
    assert programs[P]["aliases"]["production"] == {"version": "v1"}


def test_a_version_registered_by_api_answers_a_pinned_request(
    keyed: Served, admin: dict[str, str], mock: Running
) -> None:
    state = state_with_demo("API-DEMO-QUESTION", "API-DEMO-ANSWER")
    created = httpx.post(
        f"{keyed.url}/api/programs/{P}/versions", json={"state": state, "note": "api"}, headers=admin
    )
    assert created.status_code == 201, created.text
    label = created.json()["version"]
    assert created.json()["created"] is True
    again = httpx.post(f"{keyed.url}/api/programs/{P}/versions", json={"state": state}, headers=admin)
    assert again.status_code == 200 and again.json() == {**again.json(), "version": label, "created": False}
    pinned = wait_for(
        lambda: (r := ask(keyed, admin, "pinned", label)).status_code == 200 and r, 10, "the pin"
    )
    assert pinned.headers["X-Program-Version"] == label
    prompt = last_prompt(mock)
    assert "API-DEMO-QUESTION" in prompt and "SAVED-DEMO-QUESTION" not in prompt
    assert ask(keyed, admin, "unpinned").headers["X-Program-Version"] == "v1"  # production unchanged


def test_an_unknown_version_is_a_404_naming_it(keyed: Served, admin: dict[str, str]) -> None:
    answer = ask(keyed, admin, "nope", "v999")
    assert answer.status_code == 404
    assert "'v999'" in answer.json()["detail"] and answer.json()["error_type"] == "UnknownVersion"
    alias = ask(keyed, admin, "nope", "no-such-alias")
    assert alias.status_code == 404 and "'no-such-alias'" in alias.json()["detail"]


def test_a_state_that_does_not_fit_is_a_422_naming_predictor_and_field(
    keyed: Served, admin: dict[str, str]
) -> None:
    state = state_with_demo("q", "a")
    state["predict"]["demos"] = [{"question": "q", "rationale": "not a field"}]
    refused = httpx.post(f"{keyed.url}/api/programs/{P}/versions", json={"state": state}, headers=admin)
    assert refused.status_code == 422, refused.text
    assert "'predict'" in refused.json()["detail"] and "'rationale'" in refused.json()["detail"]
    state = {"generate": state["predict"]}
    refused = httpx.post(f"{keyed.url}/api/programs/{P}/versions", json={"state": state}, headers=admin)
    assert refused.status_code == 422 and "'generate'" in refused.json()["detail"]


def test_the_management_api_needs_the_admin_scope(keyed: Served, invoker: dict[str, str]) -> None:
    url = f"{keyed.url}/api/programs/{P}/versions"
    assert httpx.get(url).status_code == 401
    forbidden = httpx.get(url, headers=invoker)
    assert forbidden.status_code == 403 and "admin" in forbidden.json()["detail"]
    moved = httpx.put(
        f"{keyed.url}/api/programs/{P}/aliases/production", json={"version": "v1"}, headers=invoker
    )
    assert moved.status_code == 403
    assert ask(keyed, invoker, "an invoker may still call").status_code == 200


def test_command_add_promote_rollback(
    keyed: Served, admin: dict[str, str], tmp_path: Path, mock: Running
) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state_with_demo("CMD-DEMO-QUESTION", "CMD-DEMO-ANSWER")))
    out = manage(keyed, "program_versions", "add", P, str(path), "--note", "by command").stdout.strip()
    label = out.split()[1]
    assert out.endswith("registered") and label.startswith("v")
    manage(keyed, "program_versions", "promote", P, label)
    wait_for(
        lambda: ask(keyed, admin, "promoted").headers.get("X-Program-Version") == label, 5, "the promotion"
    )
    assert "CMD-DEMO-QUESTION" in last_prompt(mock)
    manage(keyed, "program_versions", "rollback", P)
    wait_for(
        lambda: ask(keyed, admin, "rolled back").headers.get("X-Program-Version") == "v1", 5, "the rollback"
    )
    history = manage(keyed, "program_versions", "history", P).stdout.splitlines()
    assert "rollback" in history[0] and "set" in history[1]
    nothing = manage(keyed, "program_versions", "rollback", P, check=False)
    assert nothing.returncode != 0 and "no earlier target" in nothing.stderr


def test_log_rows_carry_the_version(keyed: Served, admin: dict[str, str]) -> None:
    answer = ask(keyed, admin, "logged")
    rid = answer.headers["X-Request-ID"]

    def row() -> dict | None:
        logs = httpx.get(f"{keyed.url}/api/logs/{P}", params={"limit": 50}, headers=admin).json()["logs"]
        return next((entry for entry in logs if entry["request_id"] == rid), None)

    entry = wait_for(row, 10, "the log row")
    assert entry["version"] == answer.headers["X-Program-Version"] and entry["shadow"] is False


def register(served: Served, admin: dict[str, str], state: dict) -> str:
    created = httpx.post(f"{served.url}/api/programs/{P}/versions", json={"state": state}, headers=admin)
    assert created.status_code in (200, 201), created.text
    return created.json()["version"]


def put_alias(served: Served, admin: dict[str, str], alias: str, target: dict) -> httpx.Response:
    return httpx.put(f"{served.url}/api/programs/{P}/aliases/{alias}", json=target, headers=admin)


def test_a_split_is_sticky_per_header_value_as_the_hash_says(keyed: Served, admin: dict[str, str]) -> None:
    canary = register(keyed, admin, state_with_demo("CANARY-Q", "CANARY-A"))
    split = {"split": {"v1": 90, canary: 10}, "sticky": "header:X-User"}
    assert put_alias(keyed, admin, "canary", split).status_code == 200
    route = compile_route(split)
    for user in (f"user-{i}" for i in range(60)):
        answer = ask(keyed, {**admin, "X-User": user}, "split", "canary")
        assert answer.headers["X-Program-Version"] == route.pick(user), user
    again = {
        ask(keyed, {**admin, "X-User": "user-7"}, "again", "canary").headers["X-Program-Version"]
        for _ in range(5)
    }
    assert again == {route.pick("user-7")}
    by_key = {"split": {"v1": 50, canary: 50}, "sticky": "key"}
    assert put_alias(keyed, admin, "canary", by_key).status_code == 200
    wait_for(lambda: ask(keyed, admin, "k", "canary").status_code == 200, 5, "the split")
    assert len({ask(keyed, admin, f"key {i}", "canary").headers["X-Program-Version"] for i in range(8)}) == 1


def test_a_slow_shadow_is_logged_and_never_delays_the_answer(keyed: Served, admin: dict[str, str]) -> None:
    slow = register(
        keyed, admin, state_with_demo("SHADOW-Q", "SHADOW-A", instructions="Answer. [delay=3000]")
    )
    target = {"version": "v1", "shadow": {"version": slow, "fraction": 1.0}}
    assert put_alias(keyed, admin, "shadowed", target).status_code == 200
    questions = [f"shadowed {i}" for i in range(3)]
    for question in questions:
        started = time.monotonic()
        answer = ask(keyed, admin, question, "shadowed")
        assert answer.status_code == 200 and answer.headers["X-Program-Version"] == "v1"
        assert time.monotonic() - started < 1.5  # the shadow takes 3 s

    def shadow_rows() -> list[dict] | None:
        logs = httpx.get(f"{keyed.url}/api/logs/{P}", params={"limit": 100}, headers=admin).json()["logs"]
        rows = [e for e in logs if e["shadow"] and (e["inputs"] or {}).get("question") in questions]
        return rows if len(rows) == len(questions) else None

    rows = wait_for(shadow_rows, 20, "the shadow runs' log rows")
    assert {row["version"] for row in rows} == {slow}
    assert all(row["status_code"] == 200 and row["duration_ms"] >= 3000 for row in rows)


def test_rollback_by_api(keyed: Served, admin: dict[str, str]) -> None:
    url = f"{keyed.url}/api/programs/{P}/aliases/staging"
    assert httpx.put(url, json={"version": "v1"}, headers=admin).status_code == 200
    two = register(keyed, admin, state_with_demo("STAGING-Q", "STAGING-A"))
    assert httpx.put(url, json={"version": two}, headers=admin).json()["version"] == two
    back = httpx.post(f"{url}/rollback", headers=admin)
    assert back.status_code == 200 and back.json()["version"] == "v1"
    wait_for(
        lambda: ask(keyed, admin, "staging", "staging").headers.get("X-Program-Version") == "v1",
        5,
        "rollback",
    )
    assert httpx.post(f"{url}/rollback", headers=admin).status_code == 409
    missing = httpx.put(url, json={"version": "v404"}, headers=admin)
    assert missing.status_code == 404 and "'v404'" in missing.json()["detail"]
    history = httpx.get(f"{keyed.url}/api/programs/{P}/history", params={"alias": "staging"}, headers=admin)
    assert [move["action"] for move in history.json()["history"]] == ["rollback", "set", "set"]


def test_metrics_and_logs_per_version(keyed: Served, admin: dict[str, str]) -> None:
    pinned = register(keyed, admin, state_with_demo("METRICS-Q", "METRICS-A"))
    for i in range(3):
        assert ask(keyed, admin, f"metrics {i}", pinned).headers["X-Program-Version"] == pinned

    def versions() -> dict[str, dict] | None:
        body = httpx.get(f"{keyed.url}/api/metrics/{P}", headers=admin).json()
        found = {entry["version"]: entry for entry in body["versions"]}
        return found if found.get(pinned, {}).get("call_count") == 3 else None

    found = wait_for(versions, 15, "the pinned version's numbers")
    assert found[pinned]["error_rate"] == 0.0 and found[pinned]["p50_latency_ms"] is not None
    assert "production" in found["v1"]["aliases"] and found["v1"]["call_count"] >= 1
    listed = httpx.get(f"{keyed.url}/api/metrics", params={"by": "version"}, headers=admin).json()["versions"]
    assert {(e["program"], e["version"]) for e in listed} >= {(P, "v1"), (P, pinned)}
    logs = httpx.get(f"{keyed.url}/api/logs/{P}", params={"version": pinned}, headers=admin).json()["logs"]
    assert len(logs) == 3 and {entry["version"] for entry in logs} == {pinned}


def test_an_mcp_call_asks_for_a_version_in_its_meta(
    keyed: Served, admin: dict[str, str], mock: Running
) -> None:
    label = register(keyed, admin, state_with_demo("MCP-DEMO-Q", "MCP-DEMO-A"))
    key = admin["Authorization"].removeprefix("Bearer ")

    async def calls() -> tuple[Any, Any, Any]:
        async with connect(keyed.server, "legacy", key) as client:
            pinned = await client.call_tool(P, {"question": "mcp pinned"}, meta={"program_version": label})
            prompt = last_prompt(mock)
            unknown = await client.call_tool(P, {"question": "mcp unknown"}, meta={"program_version": "v777"})
            return pinned, prompt, unknown

    pinned, prompt, unknown = asyncio.run(calls())
    assert not pinned.is_error and pinned.meta["program_version"] == label
    assert "MCP-DEMO-Q" in prompt
    assert unknown.is_error and unknown.meta["status"] == 404 and "'v777'" in unknown.content[0].text


def test_batch_and_stream_ask_and_answer_the_version(
    keyed: Served, admin: dict[str, str], mock: Running
) -> None:
    label = register(keyed, admin, state_with_demo("DOORS-Q", "DOORS-A"))
    pinned = {**admin, "X-Program-Version": label}
    batch = httpx.post(
        f"{keyed.url}/{P}/batch", json={"inputs": [{"question": "b1"}, {"question": "b2"}]}, headers=pinned
    )
    assert batch.status_code == 200 and batch.headers["X-Program-Version"] == label
    assert all(item["ok"] for item in batch.json()["results"])
    unknown = {**admin, "X-Program-Version": "v888"}
    before = httpx.get(f"{mock.url}/stats").json()["requests"]
    refused = httpx.post(
        f"{keyed.url}/{P}/batch", json={"inputs": [{"question": "b3"}, {"question": "b4"}]}, headers=unknown
    )
    # The header is the whole request's: one 404 naming it, and no item ran (the mock saw no call).
    assert refused.status_code == 404 and "'v888'" in refused.json()["detail"], refused.text
    assert httpx.get(f"{mock.url}/stats").json()["requests"] == before
    documented = httpx.get(f"{keyed.url}/openapi.json", headers=admin).json()["paths"][f"/{P}/batch"]["post"]
    assert "404" in documented["responses"]
    with httpx.stream("POST", f"{keyed.url}/{P}/stream", json={"question": "s1"}, headers=pinned) as stream:
        assert stream.status_code == 200 and stream.headers["X-Program-Version"] == label
        assert "event: final" in "".join(stream.iter_text())
    missing = httpx.post(f"{keyed.url}/{P}/stream", json={"question": "s2"}, headers=unknown)
    assert missing.status_code == 404 and "'v888'" in missing.json()["detail"]
