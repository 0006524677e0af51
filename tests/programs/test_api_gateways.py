"""dspy-cli API gateways over a real socket: paths and methods by dspy-cli's rules, the request and
response transforms (sync and async hooks), their schemas in the OpenAPI document, validation of
what a transform produces, public routes with API keys on, setup/shutdown, one log row per call
marked with its gateway, and a path clash stopping start-up with one line."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtest.servers import production_env
from tests.databases import ServerDatabase, server_database
from tests.support import FIXTURES, ROOT, Running, project_config, service
from tests.telemetry.conftest import graceful_stop, wait_for

pytestmark = pytest.mark.integration

PROJECT = FIXTURES / "gateway_project"


@pytest.fixture(scope="module")
def gateway_server(
    tmp_path_factory: pytest.TempPathFactory, mock: Running
) -> Iterator[tuple[Running, ServerDatabase]]:
    tmp = tmp_path_factory.mktemp("gateways")
    config = project_config(PROJECT, tmp, mock.url)
    with (
        server_database(tmp) as database,
        service(tmp, PROJECT, config, TELEMETRY_FLUSH_INTERVAL_S="0.1", **database.env()) as running,
    ):
        yield running, database


@pytest.fixture
def server(gateway_server: tuple[Running, ServerDatabase]) -> Running:
    return gateway_server[0]


def test_envelope_is_unwrapped_and_the_answer_wrapped(server: Running) -> None:
    body = {"event": "message", "data": {"text": "envelope question 41"}}
    response = httpx.post(f"{server.url}/webhooks/summarize", json=body, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "ok" and answer["ready"] is True  # setup() ran before the first call
    assert "envelope question 41" in answer["answer"]  # _meta never reached forward()


def test_each_call_is_one_log_row_marked_with_its_door(
    gateway_server: tuple[Running, ServerDatabase],
) -> None:
    server, database = gateway_server
    calls = {
        "gw-1": ("/webhooks/summarize", {"event": "m", "data": {"text": "logged"}}),
        "gw-2": ("/Summarize", {"question": "logged"}),
        "gw-3": ("/broken/inputs", {"question": "logged"}),
    }
    for rid, (path, body) in calls.items():
        httpx.post(f"{server.url}{path}", json=body, headers={"X-Request-ID": rid}, timeout=30)

    def rows() -> list[tuple]:
        found = database.query(
            "SELECT request_id, program, source, entry, status_code FROM telemetry_inferencelog"
            " WHERE request_id IN ('gw-1', 'gw-2', 'gw-3') ORDER BY request_id"
        )
        return found if len(found) == 3 else []

    assert wait_for(rows, what="three log rows") == [
        ("gw-1", "Summarize", "gateway", "EnvelopeGateway", 200),
        ("gw-2", "Summarize", "http", "", 200),
        ("gw-3", "Lookup", "gateway", "BadInputsGateway", 422),
    ]


def test_public_gateway_needs_no_key_when_keys_are_on(tmp_path: Path, mock: Running) -> None:
    config = project_config(PROJECT, tmp_path, mock.url, server={"auth": True})
    with (
        server_database(tmp_path) as database,
        service(tmp_path, PROJECT, config, **database.env()) as server,
    ):
        body = {"event": "m", "data": {"text": "public"}}
        assert httpx.post(f"{server.url}/webhooks/summarize", json=body, timeout=30).status_code == 200
        assert httpx.post(f"{server.url}/Summarize", json={"question": "x"}).status_code == 401
        assert httpx.get(f"{server.url}/Lookup/QueryGateway", params={"question": "x"}).status_code == 401


def test_shutdown_hooks_run_on_sigterm(tmp_path: Path, mock: Running) -> None:
    marker = tmp_path / "shutdown.txt"
    config = project_config(PROJECT, tmp_path, mock.url)
    env = {"GATEWAY_SHUTDOWN_MARKER": str(marker)}
    with (
        server_database(tmp_path) as database,
        service(tmp_path, PROJECT, config, **env, **database.env()) as server,
    ):
        assert not marker.exists()
        assert graceful_stop(server), server.log()
    assert marker.read_text() == "EnvelopeGateway shut down\n"


def test_two_gateways_on_one_path_stop_start_up_with_one_line() -> None:
    project = FIXTURES / "gateway_clash"
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "dspysite.asgi:application", "--port", "0"],
        cwd=ROOT,
        env={
            **production_env(),
            **os.environ,
            "DSPY_PROJECT_DIR": str(project),
            "DSPY_CONFIG": str(project / "dspy.config.yaml"),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert errors == [
        "dspy-django: cannot start: gateways One.First and Two.Second both serve POST /hooks/in; "
        "set an explicit `path` on one of them"
    ]
    assert "Traceback" not in result.stderr


def test_playground_calls_the_plain_route_else_the_first_post_gateway(server: Running) -> None:
    def config(name: str) -> dict:
        page = httpx.get(f"{server.url}/ui/{name}", timeout=30)
        assert page.status_code == 200
        start = page.text.index('id="playground-config"')
        raw = page.text[page.text.index(">", start) + 1 : page.text.index("</script>", start)]
        return json.loads(raw)

    assert (config("Summarize")["endpoint"], config("Summarize")["stream"]) == ("/Summarize", True)
    assert (config("Lookup")["endpoint"], config("Lookup")["stream"]) == ("/broken/inputs", False)
