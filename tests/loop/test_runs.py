"""Evaluations and optimizations over real sockets (the mock LLM answers `Echo: <question>`)."""

import re
from typing import Any

import pytest

from tests.databases import ServerDatabase
from tests.loop.conftest import client, examples, finished, staff_session, traced_call

pytestmark = pytest.mark.integration


def test_an_exact_match_evaluation_gives_the_score_computed_by_hand(
    database: ServerDatabase, start_server: Any
) -> None:
    mixed = examples([
        ("alpha", "Echo: alpha"),  # right
        ("beta", "Echo: beta"),  # right
        ("gamma", "Echo: gamma "),  # right (whitespace trimmed)
        ("delta", "Echo: something else"),  # wrong
        ("epsilon", "epsilon"),  # wrong
    ])  # fmt: skip
    mixed.append({"inputs": {"not_an_input": "x"}, "labels": {"answer": "Echo: x"}})  # invalid: scores 0
    with start_server(database, jobworker=True) as server, client(server) as http:
        assert http.post("/api/datasets", json={"name": "mixed", "program": "Answer"}).status_code == 201
        assert http.post("/api/datasets/mixed/items", json={"examples": mixed}).status_code == 201
        body = {"program": "Answer", "dataset": "mixed", "metric": "exact_match", "field": "answer"}
        accepted = http.post("/api/evaluations", json=body)
        assert accepted.status_code == 202, accepted.text
        evaluation = finished(http, f"/api/evaluations/{accepted.json()['id']}")
        f1_id = http.post("/api/evaluations", json={**body, "metric": "f1"}).json()["id"]
        with_f1 = finished(http, f"/api/evaluations/{f1_id}")
        for bad, status, why in (
            ({**body, "metric": "nope"}, 422, "metric"),  # not a metric's form: the schema says so
            ({**body, "dataset": "none"}, 404, "No dataset"),
            ({**body, "program": "Missing"}, 404, "Program 'Missing' not found"),
            ({**body, "program": "TwoStep"}, 409, "is for Answer"),
            ({**body, "metric": "llm_judge", "judge": "Missing"}, 404, "llm_judge needs"),
            ({**body, "metric": "no.such.module:fn"}, 404, "cannot import metric"),
        ):
            refused = http.post("/api/evaluations", json=bad)
            assert refused.status_code == status and why in str(refused.json()["detail"]), refused.text
        assert http.get("/api/evaluations/999").status_code == 404
        api_compared = http.get("/api/evaluations/compare", params={"a": evaluation["id"], "b": f1_id}).json()
        compare_missing = http.get("/api/evaluations/compare", params={"a": evaluation["id"], "b": 999})
        with staff_session(server.url, database) as staff:
            page = staff.get("/admin/loop/evaluation/").text
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
            form = {
                "action": "compare",
                "_selected_action": [evaluation["id"], f1_id],
                "csrfmiddlewaretoken": token,
            }
            compared = staff.post("/admin/loop/evaluation/", data=form).text
        rows = {
            item["request_id"]: http.get(f"/api/calls/{item['request_id']}").json()
            for item in evaluation["items"]
            if item["request_id"]
        }

    assert evaluation["status"] == "succeeded", evaluation["error"]
    assert evaluation["progress"] == {"done": 6, "total": 6}
    assert evaluation["score"] == pytest.approx(3 / 6)
    scores = [(item["inputs"].get("question"), item["score"]) for item in evaluation["items"]]
    assert scores == [("alpha", 1), ("beta", 1), ("gamma", 1), ("delta", 0), ("epsilon", 0), (None, 0)]
    assert evaluation["items"][0]["outputs"] == {"answer": "Echo: alpha"}
    assert "invalid inputs" in evaluation["items"][5]["error"]
    assert len(rows) == 5 and {row["source"] for row in rows.values()} == {"eval"}  # logged program calls
    # DSPy's token F1 after normalisation: "echo delta" vs "echo something else":
    # 2 * (1/2 * 1/3) / (1/2 + 1/3) = 0.4;
    # "epsilon" vs "echo epsilon": precision 1/2, recall 1 -> 2/3.
    assert with_f1["score"] == pytest.approx((1 + 1 + 1 + 0.4 + 2 / 3 + 0) / 6)
    # The admin's side by side: the two items whose score changed first, then the rest in order.
    assert "2 of 6 items changed" in compared
    order = [q for q in re.findall(r"&#x27;question&#x27;: &#x27;(\w+)&#x27;", compared)]
    assert order == ["delta", "epsilon", "alpha", "beta", "gamma"]
    # The same side by side through the API (the invalid item has no question).
    assert api_compared["changed"] == 2
    assert [item["inputs"].get("question") for item in api_compared["items"]] == [*order, None]
    assert api_compared["items"][0]["a_score"] == 0 and api_compared["items"][0]["b_score"] == pytest.approx(
        0.4
    )
    assert compare_missing.status_code == 404 and "No evaluation 999" in compare_missing.json()["detail"]


def test_bootstrap_few_shot_on_8_examples_returns_the_bootstrapped_demos(
    database: ServerDatabase, start_server: Any
) -> None:
    # The even examples' labels are what the mock answers (they pass the metric and become demos),
    # the odd ones' are not.
    train = examples([(f"q{i}", f"Echo: q{i}" if i % 2 == 0 else f"wrong {i}") for i in range(8)])
    with start_server(database, jobworker=True) as server, client(server) as http:
        http.post("/api/datasets", json={"name": "train", "program": "Answer"})
        http.post("/api/datasets/train/items", json={"examples": train})
        body = {
            "program": "Answer", "dataset": "train", "metric": "exact_match", "field": "answer",
            "optimizer": "BootstrapFewShot", "params": {"max_bootstrapped_demos": 4, "max_labeled_demos": 0},
        }  # fmt: skip
        accepted = http.post("/api/optimizations", json=body)
        assert accepted.status_code == 202, accepted.text
        run = finished(http, f"/api/optimizations/{accepted.json()['id']}")
        assert http.post("/api/optimizations", json={**body, "optimizer": "Nope"}).status_code == 422
        logged = traced_call(http, run["request_id"])
        answered = http.post("/Answer", json={"question": "q9"}).json()  # the served instance: unchanged

    assert run["status"] == "succeeded", run["error"]
    demos = run["state"]["predict"]["demos"]
    assert [(demo["question"], demo["answer"]) for demo in demos] == [
        (f"q{i}", f"Echo: q{i}") for i in (0, 2, 4, 6)
    ]
    assert all(demo["augmented"] for demo in demos)  # bootstrapped by the teacher, not labelled ones
    assert run["score"] == pytest.approx(0.5)  # the compiled program on the trainset: evens right
    assert logged["source"] == "optimize" and logged["status"] == 200
    # 7 teacher calls (q0..q6, until 4 demos) and 8 validation calls, all on the one logged call.
    assert len(logged["lm_calls"]) == 15
    last_prompt = logged["lm_calls"][-1]["messages"]
    assert any(
        "Echo: q6" in str(message["content"]) for message in last_prompt
    )  # the demos are in the prompt
    assert answered == {"answer": "Echo: q9"}
