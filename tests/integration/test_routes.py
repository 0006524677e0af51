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


def test_programs_listing(server: Running) -> None:
    programs = {p["name"]: p for p in httpx.get(f"{server.url}/programs").json()["programs"]}
    assert {"EchoSync", "EchoAsync", "WhereAmI", "Typed", "Summarize"} <= programs.keys()
    assert programs["EchoSync"]["execution"] == "sync"
    assert programs["EchoAsync"]["execution"] == "async"
    assert programs["ForwardOnlyPredict"]["execution"] == "sync"
    assert programs["EchoSync"]["endpoint"] == "/EchoSync"
    assert programs["EchoSync"]["model"] == "mock"
    assert programs["EchoSync"]["input_schema"]["required"] == ["question"]
    assert set(programs["EchoAsync"]["output_schema"]["properties"]) == {"reasoning", "answer"}
    assert set(programs["Summarize"]["output_schema"]["properties"]) == {"text", "words"}


def test_health(server: Running) -> None:
    assert httpx.get(f"{server.url}/health/live").json() == {"status": "alive"}
    ready = httpx.get(f"{server.url}/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_openapi_and_docs(server: Running) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert "/EchoSync" in spec["paths"]
    operation = spec["paths"]["/EchoSync"]["post"]
    assert "requestBody" in operation
    assert {"200", "422", "502", "504"} <= set(operation["responses"])
    docs = httpx.get(f"{server.url}/docs")
    assert docs.status_code == 200
    assert "openapi.json" in docs.text


def test_sync_program_runs_in_the_worker_pool(server: Running) -> None:
    body = post(server, "/WhereAmI", {"tag": "t"}).json()
    assert body["output"].startswith("t@dspy-sync")


def test_forward_only_predict_subclass_runs_its_forward(server: Running) -> None:
    body = post(server, "/ForwardOnlyPredict", {"question": "q1"}).json()
    assert body == {"answer": "forward ran for q1"}


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


def test_typed_inputs_are_validated_and_passed_as_declared(server: Running) -> None:
    body = {
        "name": "n",
        "mode": "slow",
        "tags": ["a"],
        "extra": {"k": 1},
        "address": {"city": "Paris"},
        "options": {"verbose": True},
        "window": {"start": 1, "end": 2},
    }
    answer = post(server, "/Typed", body).json()
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


def test_pydantic_return_becomes_its_fields(server: Running) -> None:
    assert post(server, "/Summarize", {"text": "a b c"}).json() == {"text": "A B C", "words": 3}


def test_untyped_program_accepts_any_object(server: Running) -> None:
    assert post(server, "/Untyped", {"b": 1, "a": [2]}).json() == {"received": ["a", "b"]}


def test_validation_error_names_the_fields(server: Running) -> None:
    response = post(server, "/Typed", {"count": "many", "mode": "medium", "unknown": 1})
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
    server: Running, path: str, content: bytes, where: list
) -> None:
    """JSON's ``\\ud800`` escape parses to text no model can receive: refused before the program runs."""
    response = httpx.post(
        f"{server.url}{path}", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == where and error["type"] == "string_unicode" and "surrogate" in error["msg"]


def test_a_batch_item_with_a_lone_surrogate_fails_its_slot_with_a_422(server: Running) -> None:
    content = b'{"inputs": [{"question": "\\ud800"}, {"question": "fine"}]}'
    response = httpx.post(
        f"{server.url}/EchoSync/batch",
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
def test_malformed_bodies_get_json_errors(server: Running, content: bytes, status: int) -> None:
    response = httpx.post(
        f"{server.url}/EchoSync", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == status
    assert "detail" in response.json()


def test_unknown_program_is_a_json_404(server: Running) -> None:
    response = post(server, "/NoSuchProgram", {})
    assert response.status_code == 404
    assert "NoSuchProgram" in response.json()["detail"]


def test_wrong_method_is_a_json_405(server: Running) -> None:
    response = httpx.get(f"{server.url}/EchoSync")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert "GET" in response.json()["detail"]


def test_body_over_the_limit_is_413(server: Running) -> None:
    response = post(server, "/EchoSync", {"question": "x" * 100_000})
    assert response.status_code == 413
    assert "65536" in response.json()["detail"]
    assert post(server, "/EchoSync", {"question": "still serving"}).status_code == 200


def test_program_exception_is_a_500_without_traceback(server: Running) -> None:
    response = post(server, "/Crashes", {"question": "boom"})
    assert response.status_code == 500
    body = response.json()
    assert "cannot handle 'boom'" in body["detail"]
    assert body["error_type"] == "ValueError"
    assert "Traceback" not in response.text


def test_output_not_matching_declared_type_is_a_500(server: Running) -> None:
    response = post(server, "/BadReturn", {"text": "not a number"})
    assert response.status_code == 500
    assert "BadReturn" in response.json()["detail"]


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
