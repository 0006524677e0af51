"""dspy-cli gateway routes (a POST webhook and a GET query route) read ``X-Program-Version`` and
answer it, like the plain route: the pinned version's demos reach the mock's prompt, an unknown
version is a 404 naming it, no header runs ``production``. Over a real socket."""

from collections.abc import Iterator

import dspy
import httpx
import pytest

from tests.databases import server_database
from tests.support import FIXTURES, Running, project_config, service
from tests.versions.conftest import last_prompt

PROJECT = FIXTURES / "gateway_project"


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory, mock: Running) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("versioned-gateways")
    config = project_config(PROJECT, tmp, mock.url)
    with server_database(tmp) as database, service(tmp, PROJECT, config, **database.env()) as running:
        yield running


def register_demo(server: Running, program: str, question: str, answer: str) -> str:
    """A new version of ``program`` (one ``predict`` predictor) whose demo is ours."""
    state = {"predict": dspy.Predict("question -> answer").dump_state()}
    state["predict"]["demos"] = [{"question": question, "answer": answer}]
    created = httpx.post(f"{server.url}/api/programs/{program}/versions", json={"state": state}, timeout=30)
    assert created.status_code in (200, 201), created.text
    return created.json()["version"]


def test_a_webhook_gateway_asks_for_and_answers_the_version(gateways: Running, mock: Running) -> None:
    label = register_demo(gateways, "Summarize", "GATEWAY-DEMO-Q", "GATEWAY-DEMO-A")
    assert label != "v1"
    body = {"event": "message", "data": {"text": "pinned webhook"}}
    pinned = httpx.post(
        f"{gateways.url}/webhooks/summarize", json=body, headers={"X-Program-Version": label}, timeout=30
    )
    assert pinned.status_code == 200, pinned.text
    assert pinned.headers["X-Program-Version"] == label and pinned.json()["status"] == "ok"
    assert "GATEWAY-DEMO-Q" in last_prompt(mock)
    plain = httpx.post(f"{gateways.url}/webhooks/summarize", json=body, timeout=30)
    assert plain.headers["X-Program-Version"] == "v1"  # production
    assert "GATEWAY-DEMO-Q" not in last_prompt(mock)
    unknown = httpx.post(
        f"{gateways.url}/webhooks/summarize", json=body, headers={"X-Program-Version": "v404"}, timeout=30
    )
    assert unknown.status_code == 404 and "'v404'" in unknown.json()["detail"]


def test_a_get_gateway_asks_for_and_answers_the_version(gateways: Running, mock: Running) -> None:
    label = register_demo(gateways, "Lookup", "LOOKUP-DEMO-Q", "LOOKUP-DEMO-A")
    pinned = httpx.get(
        f"{gateways.url}/Lookup/QueryGateway",
        params={"question": "pinned lookup"},
        headers={"X-Program-Version": label},
        timeout=30,
    )
    assert pinned.status_code == 200, pinned.text
    assert pinned.headers["X-Program-Version"] == label
    assert "LOOKUP-DEMO-Q" in last_prompt(mock)
    unknown = httpx.get(
        f"{gateways.url}/Lookup/QueryGateway",
        params={"question": "x"},
        headers={"X-Program-Version": "staging"},
        timeout=30,
    )
    assert unknown.status_code == 404 and "'staging'" in unknown.json()["detail"]
