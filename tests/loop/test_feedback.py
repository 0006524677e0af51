"""Feedback over real sockets: create (201), update (200), another key's call (404), bad input
(422); per program and version in /api/metrics and in Prometheus; on the call page and the admin."""

import re
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.databases import ServerDatabase
from tests.loop.conftest import api_key, ask, client, staff_session, wait_for

pytestmark = pytest.mark.integration


def _logged(http: httpx.Client, request_id: str) -> bool:
    return http.get(f"/api/calls/{request_id}").status_code == 200


def test_feedback_is_created_updated_and_private(database: ServerDatabase, start_server: Any) -> None:
    mine, other = api_key(database, "mine"), api_key(database, "other")
    admin = api_key(database, "boss", scopes="admin")
    with start_server(database, auth=True) as server, client(server, mine) as http:
        ask(http, "Answer", "q", "fb-1")
        wait_for(lambda: _logged(http, "fb-1"), what="the call's log row")

        first = http.post("/api/feedback", json={"request_id": "fb-1", "score": 0.0, "comment": "wrong"})
        assert first.status_code == 201, first.text
        assert first.json()["created"] is True and first.json()["feedback"]["name"] == "thumbs"
        again = http.post(
            "/api/feedback", json={"request_id": "fb-1", "score": 1.0, "correction": {"answer": "B"}}
        )
        assert again.status_code == 200, again.text
        assert again.json()["feedback"]["score"] == 1.0 and again.json()["feedback"]["comment"] == ""
        labelled = http.post("/api/feedback", json={"request_id": "fb-1", "name": "tone", "value": "rude"})
        assert labelled.status_code == 201

        with client(server, other) as stranger:
            hidden = stranger.post("/api/feedback", json={"request_id": "fb-1", "score": 1})
            assert hidden.status_code == 404 and "fb-1" in hidden.json()["detail"]
        unknown = http.post("/api/feedback", json={"request_id": "nope", "score": 1})
        assert unknown.status_code == 404
        for bad in ({"request_id": "fb-1", "score": 1.5}, {"request_id": "fb-1", "score": -0.1},
                    {"request_id": "fb-1", "score": "high"}, {"request_id": "fb-1"},
                    {"request_id": "fb-1", "score": 1, "extra": 1}, {"score": 1}):  # fmt: skip
            response = http.post("/api/feedback", json=bad)
            assert response.status_code == 422, (bad, response.text)
            assert response.json()["detail"]
        with client(server, admin) as boss:  # admin may judge any call; its own row, by its own key
            assert boss.post("/api/feedback", json={"request_id": "fb-1", "score": 0.5}).status_code == 201

        call = http.get("/api/calls/fb-1").json()
    thumbs = sorted((item for item in call["feedback"] if item["name"] == "thumbs"), key=lambda i: i["score"])
    assert [(item["score"], item["correction"]) for item in thumbs] == [(0.5, None), (1.0, {"answer": "B"})]
    assert thumbs[0]["author"] != thumbs[1]["author"]  # one row per (request id, name, caller)
    rows = database.query(
        "SELECT name, score, value FROM loop_feedback WHERE request_id = 'fb-1' ORDER BY id"
    )
    assert rows == [("thumbs", 1.0, ""), ("tone", None, "rude"), ("thumbs", 0.5, "")]


def test_feedback_per_program_and_version_in_metrics_and_prometheus(
    database: ServerDatabase, start_server: Any
) -> None:
    scores = [1, 1, 0, 1, 0, 1, 1, 0]  # 8 thumbs, mean 0.625
    with start_server(database) as server, client(server) as http:
        for index in range(len(scores)):
            ask(http, "Answer", f"q{index}", f"m-{index}")
        wait_for(lambda: _logged(http, f"m-{len(scores) - 1}"), what="the log rows")
        for index, score in enumerate(scores):
            assert (
                http.post("/api/feedback", json={"request_id": f"m-{index}", "score": score}).status_code
                == 201
            )
        programs = {entry["program"]: entry for entry in http.get("/api/metrics").json()["programs"]}
        detail = http.get("/api/metrics/Answer").json()["metrics"]
        exposition = http.get("/metrics").text

    assert programs["Answer"]["feedback"] == {"thumbs": {"count": 8, "mean": 0.625}}
    assert programs["Answer"]["feedback_by_version"] == {"v1": {"thumbs": {"count": 8, "mean": 0.625}}}
    assert programs["TwoStep"]["feedback"] == {}
    assert detail["feedback"] == {"thumbs": {"count": 8, "mean": 0.625}} and detail["call_count"] == 8
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }
    labels = (("name", "thumbs"), ("program", "Answer"))
    assert samples[("dspy_feedback_total", (*labels[:1], ("outcome", "created"), labels[1]))] == 8
    assert samples[("dspy_feedback_score_sum", labels)] == 5.0
    assert samples[("dspy_feedback_score_count", labels)] == 8


def test_the_call_page_and_the_admin_show_traces_and_feedback(
    database: ServerDatabase, start_server: Any
) -> None:
    with start_server(database) as server, client(server) as http:
        ask(http, "TwoStep", "paris", "page-1")
        ask(http, "Answer", "rome", "page-2")
        ask(http, "Answer", "oslo", "page-3")
        wait_for(lambda: http.get("/api/calls/page-3").json().get("traced"), what="the traces")
        http.post(
            "/api/feedback", json={"request_id": "page-1", "score": 0.0, "correction": {"answer": "Paris"}}
        )
        http.post("/api/feedback", json={"request_id": "page-2", "score": 1.0})
        with staff_session(server.url, database) as staff:
            page = staff.get("/ui/calls/page-1")
            assert page.status_code == 200
            assert page.text.count('class="lm-call"') == 2
            assert "[[ ## draft ## ]]\nEcho: paris" in page.text.replace("&#x27;", "'")
            assert "Paris" in page.text  # the correction
            assert staff.get("/ui/calls/no-such-call").status_code == 404
            assert 'href="/ui/calls/page-2"' in staff.get("/ui/Answer").text  # the playground's recent calls

            def listed(query: str) -> set[str]:
                text = staff.get(f"/admin/telemetry/inferencelog/?{query}").text
                return set(re.findall(r"page-\d", text))

            assert listed("") == {"page-1", "page-2", "page-3"}
            assert listed("feedback_score=low") == {"page-1"}
            assert listed("feedback_score=high") == {"page-2"}
            assert listed("feedback_score=none") == {"page-3"}
            assert listed("corrected=1") == {"page-1"}
            assert listed("corrected=0") == {"page-2", "page-3"}
