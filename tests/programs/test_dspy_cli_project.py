"""The project dspy-cli's own `new` and `g gateway` made (tests/fixtures/dspy_cli_project), served
unchanged from this checkout, as `DSPY_PROJECT_DIR=... make run` serves it: its webhook gateway
unwraps the envelope on a public path, its module imports the project's own package, its image
module sends the image to the model, and the module behind gateways has no plain route."""

import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.databases import ServerDatabase, server_database
from tests.support import FIXTURES, ROOT, Running, project_copy, service
from tests.telemetry.conftest import wait_for

pytestmark = pytest.mark.integration

OWL = "https://example.com/owl.png"


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, mock: Running
) -> Iterator[tuple[Running, ServerDatabase]]:
    tmp = tmp_path_factory.mktemp("dspy-cli-project")
    project = project_copy(FIXTURES / "dspy_cli_project", tmp, mock.url, server={"auth": True})
    # The project's own package, importable as `pip install ./packages/acme_text` makes it.
    own_package = str(project / "packages" / "acme_text")
    env = {
        "OPENAI_API_KEY": "mock-key",
        "API_KEY_MISS_RELOAD_S": "0.2",
        "DSPY_PUBLIC_DOCS": "true",  # the route tests read /openapi.json without a key
        "ACME_DATA_DIR": str(tmp / "data"),
        "PYTHONPATH": os.pathsep.join(filter(None, [own_package, os.environ.get("PYTHONPATH")])),
    }
    config = project / "dspy.config.yaml"
    with server_database(tmp) as database, service(tmp, project, config, **env, **database.env()) as running:
        yield running, database


@pytest.fixture
def project_server(served: tuple[Running, ServerDatabase]) -> Running:
    return served[0]


def test_every_program_loads_with_the_routes_dspy_cli_gives_it(project_server: Running) -> None:
    ready = httpx.get(f"{project_server.url}/health/ready").json()
    assert ready == {"status": "ready", "programs": 3}
    paths = httpx.get(f"{project_server.url}/openapi.json").json()["paths"]
    assert {"/SummarizeTicketPredict", "/DescribeImagePredict", "/webhooks/ticket"} <= set(paths)
    assert "/TriageTicketPredict" not in paths  # its gateways replace the plain route


def test_the_public_webhook_unwraps_the_envelope_without_a_key(project_server: Running) -> None:
    body = {"event": "ticket.created", "data": {"id": 7, "ticket": "The printer is on fire"}}
    response = httpx.post(f"{project_server.url}/webhooks/ticket", json=body, timeout=30)
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["status"] == "triaged"
    assert set(reply["result"]) == {"category", "urgent"} and isinstance(reply["result"]["urgent"], bool)
    assert httpx.post(f"{project_server.url}/SummarizeTicketPredict", json={"ticket": "x"}).status_code == 401


def test_program_routes_need_a_key_and_the_module_uses_its_own_package(
    served: tuple[Running, ServerDatabase],
) -> None:
    project_server, database = served
    key = subprocess.run(
        [sys.executable, "manage.py", "apikey", "create", "project-tests"],
        cwd=ROOT, env={**os.environ, **database.env()}, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"}
    ticket = {"ticket": "Mail ana@example.com about the refund"}

    def summarize() -> httpx.Response | None:  # a key made a moment ago works within a reload
        response = httpx.post(
            f"{project_server.url}/SummarizeTicketPredict", json=ticket, headers=headers, timeout=30
        )
        return response if response.status_code != 401 else None

    response = wait_for(summarize, timeout_s=10, what="the new key to be accepted")
    assert response.status_code == 200, response.text
    assert "[email]" in response.json()["summary"] and "ana@example.com" not in response.json()["summary"]
    image = httpx.post(
        f"{project_server.url}/DescribeImagePredict", json={"image": OWL}, headers=headers, timeout=30
    )
    assert image.status_code == 200, image.text
    assert f"[image_url {OWL}]" in image.json()["description"]
