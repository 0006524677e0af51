"""Datasets over real sockets: built from request ids (labels: the correction, else the outputs),
exported as JSONL that loads as dspy.Example, imported back (API and manage.py)."""

import json
from typing import Any

import dspy
import httpx
import pytest

from loop.datasets import as_example
from tests.databases import ServerDatabase
from tests.loop.conftest import api_key, ask, client, manage, wait_for

pytestmark = pytest.mark.integration


def test_a_dataset_from_calls_exports_examples_with_the_corrections_as_labels(
    database: ServerDatabase, start_server: Any
) -> None:
    admin = api_key(database, "boss", scopes="admin")
    reader = api_key(database, "reader")
    with start_server(database, auth=True) as server, client(server, admin) as http:
        for index in range(3):
            ask(http, "Answer", f"question {index}", f"d-{index}")
        ask(http, "TwoStep", "elsewhere", "d-other")  # another program's call: skipped
        wait_for(lambda: http.get("/api/calls/d-other").status_code == 200, what="the log rows")
        correction = {"request_id": "d-1", "score": 0, "correction": {"answer": "the right one"}}
        assert http.post("/api/feedback", json=correction).status_code == 201

        assert http.post("/api/datasets", json={"name": "qa", "program": "Answer"}).status_code == 201
        assert http.post("/api/datasets", json={"name": "qa", "program": "Answer"}).status_code == 409
        assert http.post("/api/datasets", json={"name": "x", "program": "Nope"}).status_code == 404
        with client(server, reader) as not_admin:
            assert not_admin.post("/api/datasets", json={"name": "y", "program": "Answer"}).status_code == 403
        added = http.post(
            "/api/datasets/qa/items", json={"request_ids": ["d-0", "d-1", "d-2", "d-other", "nope"]}
        )
        assert added.status_code == 201, added.text
        assert added.json() == {"dataset": "qa", "added": 3, "skipped": ["d-other", "nope"], "items": 3}
        given = {"examples": [{"inputs": {"question": "hand-made"}, "labels": {"answer": "42"}}]}
        assert http.post("/api/datasets/qa/items", json=given).status_code == 201
        assert http.post("/api/datasets/qa/items", json={}).status_code == 422
        assert http.post("/api/datasets/none/items", json=given).status_code == 404

        export = http.get("/api/datasets/qa/export")
        assert export.status_code == 200 and export.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in export.text.splitlines()]

        assert http.post("/api/datasets", json={"name": "copy", "program": "Answer"}).status_code == 201
        imported = http.post(
            "/api/datasets/copy/import",
            content=export.content,
            headers={"content-type": "application/x-ndjson"},
        )
        assert imported.status_code == 201 and imported.json()["added"] == 4, imported.text
        bad = http.post("/api/datasets/copy/import", content=b'{"inputs": {"q": 1}}\nnot json\n')
        assert bad.status_code == 422 and "line 2" in bad.json()["detail"]
        assert http.get("/api/datasets/copy/export").text == export.text
        listing = {entry["name"]: entry["items"] for entry in http.get("/api/datasets").json()["datasets"]}
        assert listing == {"qa": 4, "copy": 4}

    assert [line["request_id"] for line in lines] == ["d-0", "d-1", "d-2", None]
    examples = [as_example(line) for line in lines]
    assert all(isinstance(example, dspy.Example) for example in examples)
    assert [example.answer for example in examples] == [
        "Echo: question 0", "the right one", "Echo: question 2", "42",
    ]  # fmt: skip
    assert examples[1].inputs().toDict() == {"question": "question 1"}
    assert examples[1].labels().toDict() == {"answer": "the right one"}
    assert lines[1]["feedback"]["thumbs"]["score"] == 0
    # The line is loadable by hand too, as the issue writes it:
    manual = dspy.Example(**lines[1]["inputs"], **lines[1]["labels"]).with_inputs(*lines[1]["inputs"])
    assert manual == examples[1]

    exported = manage(database, "datasets", "export", "qa")
    assert exported.splitlines() == export.text.splitlines()
    assert "Added 4 examples to again" in manage(
        database, "datasets", "import", "again", "-", "--program", "Answer", stdin=exported
    )
    assert manage(database, "datasets", "export", "again") == exported


def test_export_streams_in_chunks(database: ServerDatabase, start_server: Any) -> None:
    examples = [{"inputs": {"question": f"q{i}"}, "labels": {"answer": f"a{i}"}} for i in range(1203)]
    with start_server(database) as server, client(server) as http:
        http.post("/api/datasets", json={"name": "big", "program": "Answer"})
        assert http.post("/api/datasets/big/items", json={"examples": examples}).status_code == 201
        with httpx.stream("GET", f"{server.url}/api/datasets/big/export") as response:
            chunks = list(response.iter_text())
    lines = "".join(chunks).splitlines()
    assert [json.loads(line)["labels"]["answer"] for line in lines] == [f"a{i}" for i in range(1203)]
