"""Every route of the service over a real socket, against the mock LLM."""

import asyncio
import re
import uuid

import httpx
import pytest

from tests.support import Running

pytestmark = pytest.mark.integration


def post(server: Running, path: str, body: object, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=30, **kwargs)


def test_sync_program_answers_with_its_own_question(server: Running) -> None:
    question = f"sync {uuid.uuid4()}"
    response = post(server, "/EchoSync", {"question": question})
    assert response.status_code == 200, response.text
    assert question in response.json()["answer"]
    assert response.headers["content-type"] == "application/json"
    assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", response.headers["x-request-id"])


def test_async_chain_of_thought_includes_reasoning(server: Running) -> None:
    question = f"async {uuid.uuid4()}"
    body = post(server, "/EchoAsync", {"question": question}).json()
    assert question in body["answer"]
    assert question in body["reasoning"]


def test_request_id_is_echoed_when_well_formed(server: Running) -> None:
    ok = post(server, "/WhereAmI", {"tag": "x"}, headers={"X-Request-ID": "client-123"})
    assert ok.headers["x-request-id"] == "client-123"
    bad = post(server, "/WhereAmI", {"tag": "x"}, headers={"X-Request-ID": "no spaces allowed"})
    assert bad.headers["x-request-id"] != "no spaces allowed"


def test_sync_program_runs_in_the_worker_pool(server: Running) -> None:
    body = post(server, "/WhereAmI", {"tag": "t"}).json()
    assert body["output"].startswith("t@dspy-sync")


def test_event_loop_stays_responsive_while_sync_program_waits(server: Running) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            slow = asyncio.create_task(client.post("/EchoSync", json={"question": "slow [delay=1500]"}))
            # Health answers while the sync call is still waiting on the model in its thread.
            for _ in range(5):
                assert (await client.get("/health/live")).status_code == 200
            assert not slow.done()
            assert (await slow).status_code == 200

    asyncio.run(scenario())


@pytest.mark.parametrize("program", ["EchoSync", "EchoAsync"])
def test_concurrent_requests_each_get_their_own_answer(server: Running, program: str) -> None:
    async def scenario() -> list[tuple[str, httpx.Response]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            questions = [f"{program} #{i} {uuid.uuid4()} [delay=200]" for i in range(20)]
            responses = await asyncio.gather(
                *(client.post(f"/{program}", json={"question": q}) for q in questions)
            )
            return list(zip(questions, responses, strict=True))

    for question, response in asyncio.run(scenario()):
        assert response.status_code == 200, response.text
        assert question.split(" [")[0] in response.json()["answer"]


def test_body_over_the_limit_is_413(server: Running) -> None:
    response = post(server, "/EchoSync", {"question": "x" * 100_000})
    assert response.status_code == 413
    assert "65536" in response.json()["detail"]
    assert post(server, "/EchoSync", {"question": "still serving"}).status_code == 200


@pytest.mark.parametrize("program", ["EchoSync", "EchoAsync"])
def test_upstream_500_is_a_502(server: Running, program: str) -> None:
    response = post(server, f"/{program}", {"question": "fail please [fault=500]"})
    assert response.status_code == 502
    body = response.json()
    assert body["upstream_status"] == 500 and body["error_type"] == "LMServerError"
    assert body["detail"] == "Upstream LLM error from mock: HTTP 500 (LMServerError)"
    assert "mock upstream failure" not in response.text  # the provider's own text: in the log only


def test_upstream_stall_is_a_504_after_the_program_timeout(server: Running) -> None:
    response = post(server, "/SlowAsync", {"question": "hang [fault=stall]"})
    assert response.status_code == 504
    assert "1.5 s" in response.json()["detail"]
    assert post(server, "/SlowAsync", {"question": "fine again"}).status_code == 200


def test_a_10_mb_body_is_refused_and_the_server_keeps_serving(server: Running) -> None:
    body = b'{"question": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    response = httpx.post(
        f"{server.url}/EchoSync", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "detail" in response.json()
    assert post(server, "/EchoSync", {"question": "after the big one"}).status_code == 200
