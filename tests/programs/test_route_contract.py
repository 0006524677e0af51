"""The routes' contract in-process (tests/inprocess.py): programs, schemas, the OpenAPI document,
the JSON answers and errors (batch bodies included) of tests/fixtures/service_project, through
every ASGI layer and Django but no socket; the program calls reach the mock LLM. What needs a
socket or a server process (body limits, concurrency, timeouts, the worker pool, log rows) stays
in test_routes.py and tests/programs/test_batch.py."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.inprocess import InProcess, served_in_process
from tests.support import FIXTURES, Running, project_config

SERVICE_PROJECT = FIXTURES / "service_project"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, mock: Running) -> Iterator[InProcess]:
    tmp: Path = tmp_path_factory.mktemp("routes")
    with served_in_process(
        SERVICE_PROJECT, project_config(SERVICE_PROJECT, tmp, mock.url, server={"max_batch_items": 5})
    ) as served:
        yield served


def test_programs_listing(app: InProcess) -> None:
    programs = {p["name"]: p for p in app.get("/programs").json()["programs"]}
    assert {"EchoSync", "EchoAsync", "WhereAmI", "Typed", "Summarize"} <= programs.keys()
    assert programs["EchoSync"]["execution"] == "sync"
    assert programs["EchoAsync"]["execution"] == "async"
    assert programs["ForwardOnlyPredict"]["execution"] == "sync"
    assert programs["EchoSync"]["endpoint"] == "/EchoSync"
    assert programs["EchoSync"]["model"] == "mock"
    assert programs["EchoSync"]["input_schema"]["required"] == ["question"]
    assert set(programs["EchoAsync"]["output_schema"]["properties"]) == {"reasoning", "answer"}
    assert set(programs["Summarize"]["output_schema"]["properties"]) == {"text", "words"}


def test_health(app: InProcess) -> None:
    assert app.get("/health/live").json() == {"status": "alive"}
    ready = app.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_openapi_and_docs(app: InProcess) -> None:
    spec = app.get("/openapi.json").json()
    assert "/EchoSync" in spec["paths"]
    operation = spec["paths"]["/EchoSync"]["post"]
    assert "requestBody" in operation
    assert {"200", "422", "502", "504"} <= set(operation["responses"])
    docs = app.get("/docs")
    assert docs.status_code == 200
    assert "openapi.json" in docs.text


def test_forward_only_predict_subclass_runs_its_forward(app: InProcess) -> None:
    body = app.post("/ForwardOnlyPredict", json={"question": "q1"}).json()
    assert body == {"answer": "forward ran for q1"}


def test_typed_inputs_are_validated_and_passed_as_declared(app: InProcess) -> None:
    body = {
        "name": "n",
        "mode": "slow",
        "tags": ["a"],
        "extra": {"k": 1},
        "address": {"city": "Paris"},
        "options": {"verbose": True},
        "window": {"start": 1, "end": 2},
    }
    answer = app.post("/Typed", json=body).json()
    assert answer == {
        "name": "n",
        "count": 3,
        "mode": "slow",
        "tags": ["a"],
        "extra": {"k": 1},
        "address_type": "Address",
        "address": {"city": "Paris", "zip_code": None},
        "options": {"verbose": True},
        "window": [1, 2],
    }


def test_pydantic_return_becomes_its_fields(app: InProcess) -> None:
    assert app.post("/Summarize", json={"text": "a b c"}).json() == {"text": "A B C", "words": 3}


def test_untyped_program_accepts_any_object(app: InProcess) -> None:
    assert app.post("/Untyped", json={"b": 1, "a": [2]}).json() == {"received": ["a", "b"]}


def test_validation_error_names_the_fields(app: InProcess) -> None:
    response = app.post("/Typed", json={"count": "many", "mode": "medium", "unknown": 1})
    assert response.status_code == 422
    locations = {tuple(error["loc"][-1:]) for error in response.json()["detail"]}
    assert {("name",), ("count",), ("mode",), ("unknown",)} <= locations


@pytest.mark.parametrize(
    ("path", "content", "where"),
    [
        ("/EchoSync", b'{"question": "a\\ud800"}', ["body", "payload", "question"]),
        ("/EchoAsync/stream", b'{"question": "\\udfff"}', ["body", "payload", "question"]),
        ("/Typed", b'{"name": "n", "count": 1, "tags": ["ok", "\\ud83d"]}', ["body", "payload", "tags", 1]),
    ],
)
def test_a_lone_surrogate_is_a_422_naming_the_field(
    app: InProcess, path: str, content: bytes, where: list
) -> None:
    """JSON's ``\\ud800`` escape parses to text no model can receive: refused before the program runs."""
    response = app.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == where and error["type"] == "string_unicode" and "surrogate" in error["msg"]


def test_a_batch_item_with_a_lone_surrogate_fails_its_slot_with_a_422(app: InProcess) -> None:
    content = b'{"inputs": [{"question": "\\ud800"}, {"question": "fine"}]}'
    response = app.post(
        "/EchoSync/batch",
        content=content,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    bad, good = response.json()["results"]
    assert (bad["status"], bad["errors"][0]["loc"], good["ok"]) == (422, ["question"], True)


@pytest.mark.parametrize(
    ("content", "status"),
    [(b"{not json", 400), (b"[1, 2]", 422), (b'"text"', 422), (b"", 422)],
)
def test_malformed_bodies_get_json_errors(app: InProcess, content: bytes, status: int) -> None:
    response = app.post("/EchoSync", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert "detail" in response.json()


def test_unknown_program_is_a_json_404(app: InProcess) -> None:
    response = app.post("/NoSuchProgram", json={})
    assert response.status_code == 404
    assert "NoSuchProgram" in response.json()["detail"]


def test_wrong_method_is_a_json_405(app: InProcess) -> None:
    response = app.get("/EchoSync")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert "GET" in response.json()["detail"]


def test_program_exception_is_a_500_without_traceback(app: InProcess) -> None:
    response = app.post("/Crashes", json={"question": "boom"})
    assert response.status_code == 500
    body = response.json()
    assert "cannot handle 'boom'" in body["detail"]
    assert body["error_type"] == "ValueError"
    assert "Traceback" not in response.text


def test_output_not_matching_declared_type_is_a_500(app: InProcess) -> None:
    response = app.post("/BadReturn", json={"text": "not a number"})
    assert response.status_code == 500
    assert "BadReturn" in response.json()["detail"]


def test_too_many_items_is_a_413_and_nothing_runs(app: InProcess, llm: Running) -> None:
    tag = uuid.uuid4().hex
    items = [{"question": f"{tag} {i}"} for i in range(6)]
    response = app.post("/EchoAsync/batch", json={"inputs": items})
    assert response.status_code == 413
    assert response.json()["detail"] == "6 items in one batch; at most 5 (server.max_batch_items)"
    requests = httpx.get(f"{llm.url}/requests").json()["requests"]  # what the mock LLM was sent
    assert not any(tag in str(request) for request in requests)


def test_malformed_batch_bodies_are_422(app: InProcess) -> None:
    assert app.post("/EchoAsync/batch", json={"items": []}).status_code == 422
    zero = app.post("/EchoAsync/batch", json={"inputs": [], "max_concurrency": 0})
    assert zero.status_code == 422
    empty = app.post("/EchoAsync/batch", json={"inputs": []})
    assert empty.json() == {"results": []}


def test_batch_and_stream_routes_are_in_the_openapi_document(app: InProcess) -> None:
    spec = app.get("/openapi.json").json()
    names = [p["name"] for p in app.get("/programs").json()["programs"]]
    for name in names:
        assert {f"/{name}", f"/{name}/batch", f"/{name}/stream"} <= spec["paths"].keys()
    batch_op = spec["paths"]["/Typed/batch"]["post"]
    request_ref = batch_op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request_schema = spec["components"]["schemas"][request_ref.rsplit("/", 1)[1]]
    items = request_schema["properties"]["inputs"]["items"]
    assert items["properties"]["mode"]["enum"] == ["fast", "slow"]  # the program's own input schema
    assert items["required"] == ["name"]
    assert "413" in batch_op["responses"]
    stream_op = spec["paths"]["/Story/stream"]["post"]
    assert "text/event-stream" in stream_op["responses"]["200"]["content"]
    assert stream_op["requestBody"]["content"]["application/json"]["schema"]
