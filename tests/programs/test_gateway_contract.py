"""dspy-cli API gateways' contract in-process (tests/inprocess.py): paths and methods by dspy-cli's
rules, their schemas in the OpenAPI document, the request transforms (sync and async hooks), the
422s naming what a transform produced wrong. Through every ASGI layer and Django, no socket;
setup/shutdown hooks, log rows, keys and the playground page (it reads the session) are in
test_api_gateways.py."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.inprocess import InProcess, served_in_process
from tests.support import FIXTURES, Running, project_config

PROJECT = FIXTURES / "gateway_project"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, mock: Running) -> Iterator[InProcess]:
    tmp: Path = tmp_path_factory.mktemp("gateways")
    with served_in_process(PROJECT, project_config(PROJECT, tmp, mock.url)) as served:
        yield served


def test_routes_follow_dspy_cli_rules(app: InProcess) -> None:
    paths = app.get("/openapi.json").json()["paths"]
    assert set(paths["/webhooks/summarize"]) == {"post"}  # explicit path
    assert set(paths["/Summarize"]) == {"post"}  # IdentityGateway in the list: /{Module}
    assert set(paths["/Lookup/QueryGateway"]) == {"get"}  # default path /{Module}/{Gateway}, method
    assert "/Plain" in paths and "/Plain/batch" in paths  # no gateway declared: the identity route
    assert "/Lookup" not in paths and "/Lookup/batch" not in paths  # only its gateways' routes
    assert app.post("/Lookup", json={"question": "x"}).status_code == 404
    listing = {p["name"]: p for p in app.get("/programs").json()["programs"]}
    assert listing["Lookup"]["endpoint"] is None
    assert listing["Summarize"]["gateways"][0] == {
        "name": "EnvelopeGateway", "type": "api", "method": "POST",
        "path": "/webhooks/summarize", "requires_auth": False,
    }  # fmt: skip


def test_gateway_schemas_are_its_request_and_response_models(app: InProcess) -> None:
    document = app.get("/openapi.json").json()
    operation = document["paths"]["/webhooks/summarize"]["post"]
    request_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    response_ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    schemas = document["components"]["schemas"]
    assert request_ref.endswith("/Envelope") and set(schemas["Envelope"]["properties"]) == {"event", "data"}
    assert response_ref.endswith("/Wrapped")
    assert set(schemas["Wrapped"]["properties"]) == {"status", "answer", "channel", "ready"}


def test_a_bad_envelope_is_a_422_naming_the_field(app: InProcess) -> None:
    response = app.post("/webhooks/summarize", json={"event": "m", "data": {}})
    assert response.status_code == 422
    assert ["body", "payload", "data", "text"] in [error["loc"] for error in response.json()["detail"]]


def test_a_lone_surrogate_a_gateway_passes_on_is_a_422_naming_the_field(app: InProcess) -> None:
    content = b'{"event": "m", "data": {"text": "\\ud800"}}'  # its Envelope takes any text
    response = app.post("/webhooks/summarize", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["pipeline_inputs", "question"] and error["type"] == "string_unicode"


def test_get_gateway_reads_the_query_and_awaits_an_async_hook(app: InProcess) -> None:
    response = app.get("/Lookup/QueryGateway", params={"question": "abc"}, timeout=30)
    assert response.status_code == 200, response.text
    assert "q:abc" in response.json()["answer"]
    assert app.post("/Lookup/QueryGateway", json={"question": "abc"}).status_code == 405


def test_inputs_a_transform_gets_wrong_are_a_422_naming_the_field(app: InProcess) -> None:
    response = app.post("/broken/inputs", json={"question": "fine"})
    assert response.status_code == 422, response.text
    locations = [error["loc"] for error in response.json()["detail"]]
    assert ["pipeline_inputs", "question"] in locations
