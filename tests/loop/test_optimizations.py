"""Optimizations that register versions, and versions evaluated against each other, over real
sockets (the mock LLM answers `Echo: <question>`; tests/versions asserts prompts the same way)."""

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.databases import ServerDatabase
from tests.jobs.conftest import jobworker as job_worker
from tests.loop.conftest import LOOP_PROJECT, client, examples, finished, staff_session, traced_call, wait_for
from tests.redis_servers import redis_server
from tests.support import Running, project_config, service

pytestmark = pytest.mark.integration


FROM_DEMO = {"question": "FROM-V3-QUESTION", "answer": "FROM-V3-ANSWER"}


def _prompt_of(http: httpx.Client, mock: Running, question: str, version: str | None) -> tuple[str, str]:
    """``POST /Answer`` (pinned to ``version`` when given): the version that answered, and the text
    of the prompt the mock received for it."""
    headers = {"X-Program-Version": version} if version else {}
    answered = http.post("/Answer", json={"question": question}, headers=headers)
    assert answered.status_code == 200, answered.text
    sent = httpx.get(f"{mock.url}/requests", params={"limit": 1}).json()["requests"][-1]
    return answered.headers["X-Program-Version"], json.dumps(sent["messages"])


def _knows(http: httpx.Client, version: str) -> bool:
    """Whether the server's in-memory registry (what ``/programs`` lists) has ``version`` yet."""
    listing = http.get("/programs").json()
    programs = listing["programs"] if isinstance(listing, dict) else listing
    return any(entry["name"] == "Answer" and version in entry["versions"] for entry in programs)


def _change_link(listing: str, label: str) -> str:
    """The admin's change page of version ``label`` from its (one program's) change list."""
    row = r'href="(/admin/versions/version/\d+/change/[^"]*)">[^<]*</a>(?:(?!</tr>).)*?>' + label + "<"
    links = re.findall(row, listing, re.DOTALL)
    assert links, listing
    return links[0].replace("&amp;", "&")


def _logged(http: httpx.Client, request_id: str) -> dict[str, Any]:
    """``GET /api/calls/{id}`` once the call's log row is written (in batches, off the request path)."""

    def written() -> dict[str, Any] | None:
        response = http.get(f"/api/calls/{request_id}")
        return response.json() if response.status_code == 200 else None

    return wait_for(written, what=f"the log row of {request_id}")


def _create(http: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    accepted = http.post(path, json=body)
    assert accepted.status_code == 202, accepted.text
    return finished(http, f"{path}/{accepted.json()['id']}")


def test_bootstrap_few_shot_registers_a_version_with_its_demos_never_promoted(
    database: ServerDatabase, start_server: Any, llm: Running
) -> None:
    # The even examples' labels are what the mock answers: they pass the metric and become demos.
    train = examples([(f"q{i}", f"Echo: q{i}" if i % 2 == 0 else f"wrong {i}") for i in range(8)])
    heldout = examples([("h1", "Echo: h1"), ("h2", "Echo: h2"), ("h3", "not the answer")])
    with start_server(database, jobworker=True) as server, client(server) as http:
        for name, items in (("train", train), ("heldout", heldout)):
            assert http.post("/api/datasets", json={"name": name, "program": "Answer"}).status_code == 201
            assert http.post(f"/api/datasets/{name}/items", json={"examples": items}).status_code == 201
        body = {
            "program": "Answer", "from_version": "production", "dataset": "train", "metric": "exact_match",
            "field": "answer", "optimizer": "BootstrapFewShot",
            "params": {"max_bootstrapped_demos": 4, "max_labeled_demos": 0},
        }  # fmt: skip
        run = _create(http, "/api/optimizations", body)
        refused = {
            why: http.post("/api/optimizations", json={**body, "from_version": asked})
            for why, asked in (("unknown version", "v9"), ("unknown alias", "nightly"))
        }
        listing = http.get("/api/programs/Answer/versions").json()["versions"]
        aliases = {row["alias"]: row for row in http.get("/api/programs/Answer/aliases").json()["aliases"]}
        # Registered by the job worker: the server knows it once its registry poll has seen it.
        wait_for(lambda: _knows(http, "v2"), 10, "the server to know v2")
        pinned, pinned_prompt = _prompt_of(http, llm, "fresh question", "v2")
        default, default_prompt = _prompt_of(http, llm, "other question", None)
        logged = traced_call(http, run["request_id"])
        # A version of our own (v3: v2's state with another demo) is what an optimization from it starts with.
        state = {**run["state"], "predict": {**run["state"]["predict"], "demos": [FROM_DEMO]}}
        posted = http.post("/api/programs/Answer/versions", json={"state": state, "note": "by hand"})
        assert posted.json()["version"] == "v3", posted.text
        from_v3 = _create(http, "/api/optimizations", {**body, "from_version": "v3", "dataset": "heldout"})
        first_prompt = json.dumps(traced_call(http, from_v3["request_id"])["lm_calls"][0]["messages"])

        evaluate = {"program": "Answer", "dataset": "heldout", "metric": "exact_match", "field": "answer"}
        of_v2 = _create(http, "/api/evaluations", {**evaluate, "version": "v2"})
        of_production = _create(http, "/api/evaluations", evaluate)
        unknown = http.post("/api/evaluations", json={**evaluate, "version": "v7"})
        compared = http.get("/api/evaluations/compare", params={"a": of_v2["id"], "b": of_production["id"]})
        with staff_session(server.url, database) as staff:
            version_page = staff.get("/admin/versions/version/?program__exact=Answer&q=").text
            v2_page = staff.get(_change_link(version_page, "v2")).text
        answered_by = {
            _logged(http, item["request_id"])["version"]
            for evaluation in (of_v2, of_production)
            for item in evaluation["items"]
        }

    assert run["status"] == "succeeded", run["error"]
    assert run["version"] == "v2" and run["score"] == pytest.approx(0.5)
    assert run["progress"]["stage"] == "registered"
    assert [stage["stage"] for stage in run["progress"]["stages"]] == [
        "started", "compiling", "compiled", "validated", "registering", "registered"
    ]  # fmt: skip
    assert run["progress"]["trials"] == 7  # BootstrapFewShot's metric calls: q0..q6, until 4 demos
    assert logged["source"] == "optimize" and logged["status"] == 200
    # The new version: its score and lineage, on the registry's listing; not promoted.
    v1, v2 = listing
    assert v1["version"] == "v1" and v1["lineage"] == {} and v1["aliases"] == ["production"]
    assert v2["version"] == "v2" and v2["score"] == pytest.approx(0.5) and v2["aliases"] == []
    assert v2["lineage"] == {
        "optimization": run["id"], "from_version": "v1", "from_asked": "production", "dataset": "train",
        "valset": None, "optimizer": "BootstrapFewShot", "params": body["params"], "metric": "exact_match",
        "field": "answer",
    }  # fmt: skip
    assert aliases["production"]["version"] == "v1"
    assert "BootstrapFewShot" in v2_page and f"&quot;optimization&quot;: {run['id']}" in v2_page  # lineage
    # from_version's state, not the loaded one, is what the optimizer starts from (the teacher's prompt).
    assert from_v3["status"] == "succeeded" and from_v3["version"] == "v4", from_v3["error"]
    assert "FROM-V3-QUESTION" in first_prompt
    assert "FROM-V3-QUESTION" not in json.dumps(logged["lm_calls"][0]["messages"])
    for why, response in refused.items():
        assert response.status_code == 404 and "no version" in response.json()["detail"], (why, response.text)
    # Pinned to v2, the prompt to the mock carries the bootstrapped demos; production's does not.
    assert pinned == "v2" and all(f"Echo: q{i}" in pinned_prompt for i in (0, 2, 4, 6))
    assert default == "v1" and "Echo: q0" not in default_prompt
    # Both versions evaluated on one dataset, compared side by side.
    assert of_v2["status"] == of_production["status"] == "succeeded"
    assert of_v2["score"] == of_production["score"] == pytest.approx(2 / 3)
    assert answered_by == {"v1", "v2"}
    assert unknown.status_code == 404 and "no version or alias 'v7'" in unknown.json()["detail"]
    assert compared.status_code == 200, compared.text
    side_by_side = compared.json()
    assert (side_by_side["a_version"], side_by_side["b_version"]) == ("v2", "")
    assert side_by_side["changed"] == 0  # the mock answers both alike: v2 changed no answer here
    rows = [(item["inputs"]["question"], item["a_score"], item["b_score"]) for item in side_by_side["items"]]
    assert rows == [("h1", 1, 1), ("h2", 1, 1), ("h3", 0, 0)]


def test_a_cancelled_optimization_stops_and_registers_nothing(
    database: ServerDatabase, start_server: Any
) -> None:
    with start_server(database, jobworker=True) as server, client(server) as http:
        http.post("/api/datasets", json={"name": "one", "program": "Answer"})
        http.post("/api/datasets/one/items", json={"examples": examples([("c1", "Echo: c1")])})
        body = {
            "program": "Answer", "dataset": "one", "metric": "exact_match", "field": "answer",
            "optimizer": "loop_programs.optimizers:until_cancelled",
        }  # fmt: skip
        accepted = http.post("/api/optimizations", json=body)
        assert accepted.status_code == 202, accepted.text
        path = f"/api/optimizations/{accepted.json()['id']}"
        wait_for(lambda: http.get(path).json()["progress"].get("trials"), what="the optimizer's first trial")
        cancelled = http.post(f"{path}/cancel")
        run = finished(http, path)
        again = http.post(f"{path}/cancel")
        missing = http.post("/api/optimizations/999/cancel")
        versions = [row["version"] for row in http.get("/api/programs/Answer/versions").json()["versions"]]
        logged = _logged(http, run["request_id"])

    assert cancelled.status_code == 202, cancelled.text
    assert run["status"] == "cancelled" and run["version"] == "" and run["state"] is None
    assert run["progress"]["stage"] == "compiling" and run["progress"]["trials"] >= 1
    assert versions == ["v1"]  # nothing registered
    assert again.status_code == 409 and "too late" in again.json()["detail"]
    assert missing.status_code == 404
    # Its LM calls so far are one logged call, ended as cancelled.
    assert logged["source"] == "optimize" and logged["status"] == 499 and logged["error_type"] == "Cancelled"


def test_an_optimizations_lm_calls_spend_the_models_budget(
    database: ServerDatabase, tmp_path: Path, llm: Running
) -> None:
    config = project_config(LOOP_PROJECT, tmp_path, llm.url, server={"max_queue_ms": 50})
    settings = yaml.safe_load(config.read_text())
    settings["models"]["registry"]["mock"]["rpm"] = 4  # fewer than the run's 8 teacher calls
    config.write_text(yaml.safe_dump(settings))
    train = examples([(f"b{i}", f"Echo: b{i}") for i in range(8)])
    # The run is on a job worker, the request after it on the server: one budget, in Redis.
    with (
        redis_server(tmp_path) as redis,
        service(tmp_path, LOOP_PROJECT, config, **database.env(), REDIS_URL=redis.url) as server,
        job_worker(tmp_path, config, database, DSPY_PROJECT_DIR=str(LOOP_PROJECT), REDIS_URL=redis.url),
        client(server) as http,
    ):
        http.post("/api/datasets", json={"name": "budget", "program": "Answer"})
        http.post("/api/datasets/budget/items", json={"examples": train})
        body = {
            "program": "Answer", "dataset": "budget", "metric": "exact_match", "field": "answer",
            "optimizer": "BootstrapFewShot", "params": {"max_bootstrapped_demos": 8, "max_labeled_demos": 0},
        }  # fmt: skip
        run = _create(http, "/api/optimizations", body)
        after = http.post("/Answer", json={"question": "after the run"})

    # The model's budget is the one every call spends: the run hit it, and a request after it finds it spent.
    assert run["status"] == "failed" and "ModelBudgetExceeded" in run["error"], run
    assert after.status_code == 429, after.text
