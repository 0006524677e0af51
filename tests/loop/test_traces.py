"""Call traces over real sockets: each LM call's rendered messages and raw completion, in order."""

from typing import Any

import httpx
import pytest

from tests.databases import ServerDatabase
from tests.loop.conftest import api_key, ask, client, traced_call

pytestmark = pytest.mark.integration


def _user_text(call: dict[str, Any]) -> str:
    return next(m["content"] for m in reversed(call["messages"]) if m["role"] == "user")


@pytest.mark.parametrize("program", ["TwoStep", "TwoStepAsync"])
def test_a_two_predictor_call_shows_both_prompts_and_completions(
    database: ServerDatabase, start_server: Any, program: str
) -> None:
    with start_server(database) as server, client(server) as http:
        response = ask(http, program, "capital of France", "t-1")
        assert response.json() == {"answer": "Echo: Echo: capital of France"}
        call = traced_call(http, "t-1")

    assert call["program"] == program and call["status"] == 200 and call["version"] == "v1"
    assert call["inputs"] == {"question": "capital of France"}
    assert call["outputs"] == {"answer": "Echo: Echo: capital of France"}
    first, second = call["lm_calls"]
    # The rendered prompts DSPy's ChatAdapter sent, system message first, in call order.
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert "`question` (str)" in first["messages"][0]["content"]
    assert "`draft` (str)" in first["messages"][0]["content"]
    assert "[[ ## question ## ]]\ncapital of France" in _user_text(first)
    assert "[[ ## draft ## ]]\nEcho: capital of France" in _user_text(second)
    assert "`answer` (str)" in second["messages"][0]["content"]
    # The raw completions, as the model wrote them (ChatAdapter sections), not the parsed outputs.
    assert first["completion"].startswith("[[ ## draft ## ]]\nEcho: capital of France")
    assert "[[ ## completed ## ]]" in first["completion"]
    assert second["completion"].startswith("[[ ## answer ## ]]\nEcho: Echo: capital of France")
    for lm_call in (first, second):
        assert lm_call["model"] == "openai/mock-model" and lm_call["model_alias"] == "mock"
        assert lm_call["usage"]["prompt_tokens"] > 0 and lm_call["usage"]["completion_tokens"] > 0
        assert lm_call["duration_ms"] > 0 and lm_call["truncated"] is False
    prompt_tokens = first["usage"]["prompt_tokens"] + second["usage"]["prompt_tokens"]
    assert call["tokens"]["prompt_tokens"] == prompt_tokens


def test_long_messages_are_cut_and_marked(database: ServerDatabase, start_server: Any) -> None:
    question = "x" * 5000
    limits = {"LOOP_TRACE_MAX_CHARS": "1000", "LOOP_TRACE_MAX_LM_CALLS": "1"}
    with start_server(database, **limits) as server, client(server) as http:
        ask(http, "Answer", question, "long")
        [lm_call] = traced_call(http, "long")["lm_calls"]
        ask(http, "TwoStep", "two calls", "capped")
        capped = traced_call(http, "capped")
    [first] = capped["lm_calls"]  # the first LM call only; the log still counts both
    assert (
        "[[ ## question ## ]]" in _user_text(first)
        and capped["tokens"]["prompt_tokens"] > first["usage"]["prompt_tokens"]
    )
    assert lm_call["truncated"] is True
    user = _user_text(lm_call)
    assert len(user) < 1100 and user.endswith("characters]") and "…[truncated " in user


def test_no_trace_without_capture(database: ServerDatabase, start_server: Any) -> None:
    with start_server(database) as server, client(server) as http:
        ask(http, "Uncaptured", "q", "off")
        ask(http, "Answer", "q", "on")
        traced_call(http, "on")  # written after "off" (same writer, same order): "off" had nothing to write
        call = http.get("/api/calls/off").json()
    assert call["traced"] is False and call["lm_calls"] == [] and call["inputs"] is None
    assert database.query("SELECT COUNT(*) FROM loop_calltrace WHERE request_id = 'off'") == [(0,)]


def test_a_read_key_sees_its_own_calls_only(database: ServerDatabase, start_server: Any) -> None:
    mine, other = api_key(database, "mine"), api_key(database, "other")
    admin = api_key(database, "boss", scopes="admin")
    invoke_only = api_key(database, "caller", scopes="invoke")
    with start_server(database, auth=True) as server, client(server, mine) as http:
        ask(http, "Answer", "q", "own")
        assert traced_call(http, "own")["api_key"].startswith("mine (dsk_")
        with client(server, other) as stranger:
            response = stranger.get("/api/calls/own")
            assert response.status_code == 404, response.text
            assert "own" in response.json()["detail"]
        with client(server, admin) as boss:
            assert boss.get("/api/calls/own").json()["lm_calls"]
        with client(server, invoke_only) as caller:
            assert caller.get("/api/calls/own").status_code == 403
        assert httpx.get(f"{server.url}/api/calls/own").status_code == 401
        assert http.get("/api/calls/no-such-call").status_code == 404
