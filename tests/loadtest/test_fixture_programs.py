"""The load-test fixture (loadtest/fixture_project) served by this service against the mock LLM.

Concurrent requests must each get their own answer (the mock echoes the question), every LM call
must reach the mock (no cache), and each fault the mock can inject must come back as the status
documented in loadtest/README.md. No locust here: plain concurrent HTTP requests.
"""

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import FAULT_STATUS, ROOT, Running, mock_llm, project_config, service

pytestmark = pytest.mark.integration

FIXTURE = ROOT / "loadtest" / "fixture_project"
# Program -> LM calls per request.
PROGRAMS = {"SimplePredict": 1, "AsyncPredict": 1, "MultiStep": 2}
CONCURRENT = 20
# Long enough that all the requests are at the mock at once, short enough for a quick test.
DELAY_MS = 300
REQUEST_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fixture_programs")


@pytest.fixture(scope="module")
def mock(module_tmp: Path) -> Iterator[Running]:
    """This module's own mock, not the session's: its counters (peak in flight included) are
    asserted exactly, so no other module's request, a stalled one say, may reach it."""
    with mock_llm(module_tmp) as running:
        yield running


@pytest.fixture(scope="module")
def server(module_tmp: Path, mock: Running) -> Iterator[Running]:
    config = project_config(FIXTURE, module_tmp, mock.url, server={"request_timeout_s": REQUEST_TIMEOUT_S})
    env = {"DATABASE_URL": f"sqlite:///{module_tmp / 'db.sqlite3'}"}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "dspysite.settings", **env},
        check=True,
        capture_output=True,
    )
    with service(module_tmp, FIXTURE, config, **env) as running:
        yield running


def mock_stats(mock: Running) -> dict[str, int]:
    return httpx.get(f"{mock.url}/stats").json()


def reset_mock(mock: Running) -> None:
    httpx.post(f"{mock.url}/stats/reset").raise_for_status()


async def ask_concurrently(url: str, questions: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(*(client.post(url, json={"question": q}) for q in questions))


def test_fixture_serves_the_three_programs(server: Running) -> None:
    listing = httpx.get(f"{server.url}/programs").json()["programs"]
    execution = {program["name"]: program["execution"] for program in listing}
    assert execution == {"SimplePredict": "sync", "AsyncPredict": "async", "MultiStep": "async"}
    assert httpx.get(f"{server.url}/health/ready").status_code == 200


@pytest.mark.parametrize("program", PROGRAMS)
def test_concurrent_requests_each_get_their_own_answer(server: Running, mock: Running, program: str) -> None:
    reset_mock(mock)
    questions = [f"{program} {index} {uuid.uuid4().hex} [delay={DELAY_MS}]" for index in range(CONCURRENT)]

    responses = asyncio.run(ask_concurrently(f"{server.url}/{program}", questions))

    assert [response.status_code for response in responses] == [200] * CONCURRENT, [
        response.text for response in responses if response.status_code != 200
    ]
    for question, response in zip(questions, responses, strict=True):
        answer = response.json()["answer"]
        assert question in answer
        others = [other for other in questions if other != question]
        assert not any(other in answer for other in others)
    stats = mock_stats(mock)
    # One completion per LM call: nothing answered from a cache.
    assert stats["completions"] == CONCURRENT * PROGRAMS[program]
    # All requests were at the mock at the same time: the server did not serialise them.
    assert stats["peak_in_flight"] == CONCURRENT


@pytest.mark.parametrize("program", ["SimplePredict", "AsyncPredict"])
@pytest.mark.parametrize("fault", FAULT_STATUS)
def test_mock_faults_map_to_documented_status(server: Running, program: str, fault: str) -> None:
    question = f"{program} {uuid.uuid4().hex} [fault={fault}]"
    response = httpx.post(f"{server.url}/{program}", json={"question": question}, timeout=30)
    assert response.status_code == FAULT_STATUS[fault], response.text
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    if fault in ("500", "429"):
        assert body["upstream_status"] == int(fault)
