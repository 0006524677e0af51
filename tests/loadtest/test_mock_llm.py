"""Tests for the mock LLM server (loadtest/mock_llm.py).

The mock stands in for a paid LLM in every other test and load test, so these tests pin down the parts they
rely on: the OpenAI wire format, DSPy-parseable answers that echo the request, the steering markers, every
fault mode, the counters, the request log, multimodal parts, and real DSPy programs running against it end to
end.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import httpx
import pytest

# DSPy/LiteLLM would otherwise fetch the model cost map from GitHub on first use.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import aiohttp
import dspy
from aiohttp import web
from dspy.utils.exceptions import AdapterParseError

from loadtest.mock_llm import MOCK_LLM_KEY, MockConfig, build_app

ROOT = Path(__file__).resolve().parents[2]
MOCK_SCRIPT = ROOT / "loadtest" / "mock_llm.py"
LISTENING = re.compile(r"^mock LLM listening on http://127\.0\.0\.1:(\d+)/v1 \(delay=([\d.]+)ms\)$")
MOCK_ENV_VARS = ("MOCK_DELAY_MS", "MOCK_FAULT", "MOCK_ERROR_RATE", "MOCK_STALL_S", "MOCK_HOST", "MOCK_PORT")


@dataclass
class MockProcess:
    process: subprocess.Popen[str]
    stderr: IO[str]
    port: int
    banner: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> str:
        """Stop exactly the process we started (by its PID), escalating to SIGKILL; return its stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.stderr.seek(0)
        output = self.stderr.read()
        self.stderr.close()
        return output


def start_mock(**env: str) -> MockProcess:
    """Start the CLI on a free port and read the port from its one-line banner."""
    clean_env = {key: value for key, value in os.environ.items() if key not in MOCK_ENV_VARS}
    stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 -- lives as long as the process; closed by stop()
    process = subprocess.Popen(
        [sys.executable, str(MOCK_SCRIPT), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**clean_env, **env},
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 30)
    banner = process.stdout.readline().rstrip("\n") if ready else ""
    mock = MockProcess(process=process, stderr=stderr, port=0, banner=banner)
    match = LISTENING.match(banner)
    if match is None:
        pytest.fail(f"mock did not start; first line {banner!r}; stderr:\n{mock.stop()}")
    mock.port = int(match.group(1))
    return mock


@pytest.fixture(scope="module")
def server() -> Iterator[MockProcess]:
    mock = start_mock(MOCK_DELAY_MS="0")
    try:
        yield mock
    finally:
        stderr = mock.stop()
    # Faults (drops, stalls cut short, 500s) are expected behaviour and must not surface as server errors.
    assert "Traceback" not in stderr and "Error handling request" not in stderr, stderr


@pytest.fixture
def client(server: MockProcess) -> Iterator[httpx.Client]:
    """An HTTP client on a freshly reset mock, so every test sees its own counters and request log."""
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        http.post("/stats/reset").raise_for_status()
        yield http


@pytest.fixture
def lm(server: MockProcess) -> dspy.LM:
    return dspy.LM("openai/mock-model", api_base=f"{server.base_url}/v1", api_key="mock", cache=False)


class Typed(dspy.Signature):
    """Answer with typed fields."""

    question: str = dspy.InputField()
    count: int = dspy.OutputField()
    score: float = dspy.OutputField()
    ok: bool = dspy.OutputField()
    tags: list[str] = dspy.OutputField()
    sentiment: Literal["positive", "negative"] = dspy.OutputField()
    extra: dict[str, Any] = dspy.OutputField()


def dspy_messages(
    question: str, signature: type[dspy.Signature] | str = "question -> answer", adapter: Any = None
) -> list[dict[str, Any]]:
    """The exact messages a DSPy adapter sends for ``question``."""
    sig = dspy.Signature(signature) if isinstance(signature, str) else signature
    return (adapter or dspy.ChatAdapter()).format(sig, demos=[], inputs={"question": question})


def chat(client: httpx.Client, question: str, **extra: Any) -> httpx.Response:
    """POST a DSPy ChatAdapter prompt (``question -> answer`` unless ``messages`` is given)."""
    body = {"model": "mock-model", "messages": dspy_messages(question), **extra}
    return client.post("/v1/chat/completions", json=body)


def content_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def sse_events(response: httpx.Response) -> list[str]:
    """The ``data:`` payloads of an SSE response, in order."""
    return [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]


def get_stats(client: httpx.Client) -> dict[str, int]:
    return client.get("/stats").json()


# ----------------------------------------------------------------------------------------------------------
# Wire format and answers
# ----------------------------------------------------------------------------------------------------------


def test_answer_echoes_question_in_chat_adapter_format_with_usage(client: httpx.Client) -> None:
    question = "What is the capital of France?"
    messages = dspy_messages(question)
    response = client.post("/v1/chat/completions", json={"model": "mock-model", "messages": messages})
    body = response.json()

    content = content_of(response)
    assert content == f"[[ ## answer ## ]]\nEcho: {question}\n\n[[ ## completed ## ]]"
    assert dspy.ChatAdapter().parse(dspy.Signature("question -> answer"), content) == {
        "answer": f"Echo: {question}"
    }
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "mock-model"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["choices"][0]["message"]["role"] == "assistant"
    prompt_tokens = sum(len(message["content"]) for message in messages) // 4
    completion_tokens = len(content) // 4 + 1
    assert body["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def test_unversioned_path_and_first_input_field(client: httpx.Client) -> None:
    signature = "topic, question -> answer"
    messages = dspy.ChatAdapter().format(
        dspy.Signature(signature), demos=[], inputs={"topic": "geography", "question": "Where is Lyon?"}
    )
    response = client.post("/chat/completions", json={"model": "mock-model", "messages": messages})
    assert content_of(response) == "[[ ## answer ## ]]\nEcho: geography\n\n[[ ## completed ## ]]"


def test_chain_of_thought_prompt_gets_one_section_per_output_field(client: httpx.Client) -> None:
    messages = dspy_messages("why?", dspy.ChainOfThought("question -> answer").predict.signature)
    content = content_of(client.post("/v1/chat/completions", json={"model": "m", "messages": messages}))
    assert content == (
        "[[ ## reasoning ## ]]\nEcho: why?\n\n[[ ## answer ## ]]\nEcho: why?\n\n[[ ## completed ## ]]"
    )


def test_typed_output_fields_get_valid_values(client: httpx.Client) -> None:
    question = "Rate this movie"
    messages = dspy_messages(question, Typed)
    content = content_of(client.post("/v1/chat/completions", json={"model": "m", "messages": messages}))

    assert "[[ ## sentiment ## ]]\npositive\n" in content  # Literal value without quotes
    assert dspy.ChatAdapter().parse(Typed, content) == {
        "count": len(question),
        "score": float(len(question)),
        "ok": True,
        "tags": [f"Echo: {question}"],
        "sentiment": "positive",
        "extra": {"echo": f"Echo: {question}"},
    }


def test_plain_chat_without_dspy_prompt_is_echoed(client: httpx.Client) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}]
    response = client.post("/v1/chat/completions", json={"model": "m", "messages": messages})
    assert content_of(response) == "Echo: hello there"


def test_usage_marker_overrides_token_counts(client: httpx.Client) -> None:
    first = chat(client, "what is 2+2 [usage=17,5]").json()
    second = chat(client, "what is 3+3 [usage=40,9]").json()
    assert first["usage"] == {"prompt_tokens": 17, "completion_tokens": 5, "total_tokens": 22}
    assert second["usage"] == {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49}


def test_invalid_requests_are_rejected_with_openai_errors(client: httpx.Client) -> None:
    not_json = client.post(
        "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400
    assert not_json.json()["error"]["type"] == "invalid_request_error"
    unknown_fault = chat(client, "x [fault=explode]")
    assert unknown_fault.status_code == 400
    assert "explode" in unknown_fault.json()["error"]["message"]


# A 1x1 PNG and a short WAV header: real bytes, so the digests below are of known content.
PNG_BYTES = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
WAV_BYTES = b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00@\x1f\x00\x00"


def digest(content: bytes) -> str:
    return f"{len(content)} bytes sha256 {hashlib.sha256(content).hexdigest()[:16]}"


def test_multimodal_parts_are_read_and_recorded(client: httpx.Client) -> None:
    """Text parts drive the answer; image and audio parts read as a line naming what arrived."""
    png = {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG_BYTES).decode()},
    }
    link = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}}
    wav = {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(WAV_BYTES).decode(), "format": "wav"},
    }
    system = dspy_messages("x")[0]

    def first_input_echo(part: dict[str, Any]) -> httpx.Response:
        content = [
            {"type": "text", "text": "[[ ## media ## ]]\n"},
            part,
            {"type": "text", "text": "\n\n[[ ## question ## ]]\nwhat is it? [usage=9,1]"},
        ]
        body = {"model": "mock-model", "messages": [system, {"role": "user", "content": content}]}
        return client.post("/v1/chat/completions", json=body)

    response = first_input_echo(png)
    assert content_of(response) == (
        f"[[ ## answer ## ]]\nEcho: [image_url image/png {digest(PNG_BYTES)}]\n\n[[ ## completed ## ]]"
    )
    assert response.json()["usage"]["prompt_tokens"] == 9  # a marker in a text part still steers the request
    assert content_of(first_input_echo(link)).startswith(
        "[[ ## answer ## ]]\nEcho: [image_url https://example.com/cat.png]"
    )
    assert content_of(first_input_echo(wav)).startswith(
        f"[[ ## answer ## ]]\nEcho: [input_audio wav {digest(WAV_BYTES)}]"
    )
    recorded = client.get("/requests").json()["requests"]
    assert [body["messages"][1]["content"][1] for body in recorded] == [png, link, wav]  # exactly as sent


def test_health_and_models(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"ok": True}
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    assert [model["id"] for model in models["data"]] == ["mock-model"]


# ----------------------------------------------------------------------------------------------------------
# Streaming and delays
# ----------------------------------------------------------------------------------------------------------


def test_streaming_sends_chunks_then_usage_then_done(client: httpx.Client) -> None:
    question = "Tell me something long enough to be streamed in pieces"
    expected = chat(client, question).json()
    body = {
        "model": "mock-model",
        "messages": dspy_messages(question),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)

    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk["id"] for chunk in chunks}) == 1
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == expected["usage"]
    choice_chunks = chunks[:-1]
    assert all(chunk["usage"] is None for chunk in choice_chunks)
    assert choice_chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert choice_chunks[-1]["choices"][0]["finish_reason"] == "stop"
    pieces = [chunk["choices"][0]["delta"].get("content") for chunk in choice_chunks]
    pieces = [piece for piece in pieces if piece]
    assert len(pieces) >= 3
    assert "".join(pieces) == expected["choices"][0]["message"]["content"]


def test_streaming_without_include_usage_has_no_usage_chunk(client: httpx.Client) -> None:
    body = {"model": "mock-model", "messages": dspy_messages("short"), "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all("usage" not in chunk and chunk["choices"] for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_delay_marker_delays_answer(client: httpx.Client) -> None:
    started = time.perf_counter()
    response = chat(client, "slow one [delay=300]")
    assert response.status_code == 200
    assert time.perf_counter() - started >= 0.3


def test_streaming_spreads_delay_over_chunks(client: httpx.Client) -> None:
    body = {"model": "mock-model", "messages": dspy_messages("spread it out [delay=600]"), "stream": True}
    started = time.perf_counter()
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        arrivals = [
            time.perf_counter() - started for line in response.iter_lines() if line.startswith("data: ")
        ]
    assert arrivals[-1] >= 0.6
    assert arrivals[0] < 0.3, "the first chunk must arrive before the whole delay has passed"
    assert arrivals[-1] - arrivals[1] >= 0.3, "content chunks must be spread over the delay"


def test_concurrent_delayed_requests_overlap_and_peak_is_counted(
    server: MockProcess, client: httpx.Client
) -> None:
    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            body = {"model": "m", "messages": dspy_messages("parallel [delay=500]")}
            responses = await asyncio.gather(
                *(http.post("/v1/chat/completions", json=body) for _ in range(10))
            )
            return [response.status_code for response in responses]

    started = time.perf_counter()
    assert asyncio.run(burst()) == [200] * 10
    assert time.perf_counter() - started < 2.5, "delays must not serialize requests"
    assert get_stats(client) == {
        "completions": 10,
        "in_flight": 0,
        "peak_in_flight": 10,
        "requests": 10,
        "faults": 0,
    }


def test_gather_marker_holds_requests_until_the_whole_group_is_in_flight(
    server: MockProcess, client: httpx.Client
) -> None:
    """[gather=N]: nobody is answered before the N-th arrives; then all are, and the peak is N."""

    async def group() -> list[float]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=20) as http:
            body = {"model": "m", "messages": dspy_messages("together [gather=6]")}
            send = http.post
            first_five = [asyncio.ensure_future(send("/v1/chat/completions", json=body)) for _ in range(5)]
            done, _ = await asyncio.wait(first_five, timeout=1.0)  # unheld, they would answer in ms
            assert not done
            sixth = await http.post("/v1/chat/completions", json=body)
            answers = [sixth, *await asyncio.gather(*first_five)]
            return [answer.status_code for answer in answers]

    assert asyncio.run(group()) == [200] * 6
    stats = get_stats(client)
    assert (stats["peak_in_flight"], stats["completions"], stats["in_flight"]) == (6, 6, 0)


# ----------------------------------------------------------------------------------------------------------
# JSON response formats
# ----------------------------------------------------------------------------------------------------------


def test_json_object_response_format_answers_output_fields_as_json(client: httpx.Client) -> None:
    question = "Classify this"
    body = {
        "model": "m",
        "messages": dspy_messages(question, Typed),
        "response_format": {"type": "json_object"},
    }
    content = content_of(client.post("/v1/chat/completions", json=body))
    expected = {
        "count": len(question),
        "score": float(len(question)),
        "ok": True,
        "tags": [f"Echo: {question}"],
        "sentiment": "positive",
        "extra": {"echo": f"Echo: {question}"},
    }
    assert json.loads(content) == expected
    assert dspy.JSONAdapter().parse(Typed, content) == expected


def test_json_schema_response_format_follows_the_schema(client: httpx.Client) -> None:
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string"},
            "confidence": {"type": "number"},
            "label": {"type": "string", "enum": ["spam", "ham"]},
            "people": {"type": "array", "items": {"$ref": "#/$defs/Person"}},
            "note": {"anyOf": [{"type": "null"}, {"type": "integer"}]},
        },
        "$defs": {
            "Person": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            }
        },
    }
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "Out", "schema": schema, "strict": True},
    }
    body = {"model": "m", "messages": dspy_messages("abc"), "response_format": response_format}
    content = content_of(client.post("/v1/chat/completions", json=body))
    assert json.loads(content) == {
        "answer": "Echo: abc",
        "confidence": 3.0,
        "label": "spam",
        "people": [{"name": "Echo: abc", "age": 3}],
        "note": 3,
    }


# ----------------------------------------------------------------------------------------------------------
# Faults
# ----------------------------------------------------------------------------------------------------------


def test_fault_500(client: httpx.Client) -> None:
    response = chat(client, "boom [fault=500]")
    assert response.status_code == 500
    assert response.json() == {
        "error": {"message": "mock upstream failure", "type": "server_error", "code": None}
    }


def test_fault_429_has_retry_after(client: httpx.Client) -> None:
    response = chat(client, "slow down [fault=429]")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_fault_malformed_is_unparseable_by_dspy(client: httpx.Client) -> None:
    content = content_of(chat(client, "please [fault=malformed]"))
    assert content == "I refuse to follow the format."
    with pytest.raises(AdapterParseError):
        dspy.ChatAdapter().parse(dspy.Signature("question -> answer"), content)


def test_fault_badjson_returns_invalid_json(client: httpx.Client) -> None:
    response = chat(client, "garbage [fault=badjson]")
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_fault_drop_closes_the_connection_without_a_response(client: httpx.Client) -> None:
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        chat(client, "vanish [fault=drop]")
    assert content_of(chat(client, "still alive")).endswith("Echo: still alive\n\n[[ ## completed ## ]]")
    assert get_stats(client)["faults"] == 1


def wait_until_idle(client: httpx.Client, timeout: float = 5.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        stats = get_stats(client)
        if stats["in_flight"] == 0 or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


def test_fault_stall_outlasts_client_timeout_and_is_cancelled_on_disconnect(
    server: MockProcess, client: httpx.Client
) -> None:
    outcome: list[BaseException | httpx.Response] = []

    def impatient_call() -> None:
        with httpx.Client(base_url=server.base_url, timeout=1.0) as impatient:
            body = {"model": "m", "messages": dspy_messages("hang [fault=stall]")}
            try:
                outcome.append(impatient.post("/v1/chat/completions", json=body))
            except httpx.HTTPError as exc:
                outcome.append(exc)

    caller = threading.Thread(target=impatient_call)
    caller.start()
    time.sleep(0.5)
    assert get_stats(client)["in_flight"] == 1  # stalled while the client waits (MOCK_STALL_S is 300 s)
    caller.join(timeout=10)
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.ReadTimeout)
    stats = wait_until_idle(client)  # the client closed its connection: the stall must end now
    assert stats == {"completions": 0, "in_flight": 0, "peak_in_flight": 1, "requests": 1, "faults": 1}


def test_global_fault_from_env_with_default_rate_and_opt_out() -> None:
    mock = start_mock(MOCK_FAULT="429", MOCK_DELAY_MS="150")
    try:
        assert mock.banner.endswith("(delay=150ms)")
        with httpx.Client(base_url=mock.base_url, timeout=10) as http:
            assert [chat(http, f"q{i}").status_code for i in range(5)] == [429] * 5
            started = time.perf_counter()
            assert content_of(chat(http, "spared [fault=none]")).startswith(
                "[[ ## answer ## ]]\nEcho: spared"
            )
            assert time.perf_counter() - started >= 0.15
            assert chat(http, "other fault [fault=500]").status_code == 500
            assert get_stats(http) == {
                "completions": 1,
                "in_flight": 0,
                "peak_in_flight": 1,
                "requests": 7,
                "faults": 6,
            }
    finally:
        mock.stop()


def test_global_fault_error_rate_is_a_probability() -> None:
    mock = start_mock(MOCK_FAULT="500", MOCK_ERROR_RATE="0.5")
    try:
        with httpx.Client(base_url=mock.base_url, timeout=10) as http:
            codes = [chat(http, f"q{i}").status_code for i in range(200)]
            stats = get_stats(http)
    finally:
        mock.stop()
    assert set(codes) == {200, 500}
    assert 60 <= codes.count(500) <= 140  # Binomial(200, 0.5): outside this range is a > 5 sigma event
    assert stats["faults"] == codes.count(500)
    assert stats["completions"] == codes.count(200)


# ----------------------------------------------------------------------------------------------------------
# Stats and request log
# ----------------------------------------------------------------------------------------------------------


def test_stats_count_and_reset(client: httpx.Client) -> None:
    assert get_stats(client) == {
        "completions": 0,
        "in_flight": 0,
        "peak_in_flight": 0,
        "requests": 0,
        "faults": 0,
    }
    for index in range(3):
        assert chat(client, f"ok {index}").status_code == 200
    body = {"model": "m", "messages": dspy_messages("streamed"), "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert sse_events(response)[-1] == "[DONE]"
    assert chat(client, "bad [fault=500]").status_code == 500
    assert chat(client, "bad [fault=malformed]").status_code == 200
    assert get_stats(client) == {
        "completions": 4,
        "in_flight": 0,
        "peak_in_flight": 1,
        "requests": 6,
        "faults": 2,
    }

    reset = client.post("/stats/reset").json()
    assert reset == {"completions": 0, "in_flight": 0, "peak_in_flight": 0, "requests": 0, "faults": 0}
    assert get_stats(client) == reset
    assert client.get("/requests").json() == {"requests": []}


def test_reset_while_a_request_is_in_flight_keeps_in_flight_accurate(
    server: MockProcess, client: httpx.Client
) -> None:
    def slow_call() -> None:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            assert chat(http, "slow [delay=800]").status_code == 200

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.3)
    assert client.post("/stats/reset").json() == {
        "completions": 0,
        "in_flight": 1,
        "peak_in_flight": 1,
        "requests": 0,
        "faults": 0,
    }
    caller.join(timeout=10)
    assert get_stats(client) == {
        "completions": 1,
        "in_flight": 0,
        "peak_in_flight": 1,
        "requests": 0,
        "faults": 0,
    }


def test_requests_log_returns_recent_bodies_newest_last(client: httpx.Client) -> None:
    bodies = [
        {"model": "mock-model", "messages": dspy_messages(f"question {index}"), "temperature": index / 10}
        for index in range(3)
    ]
    bodies[2]["response_format"] = {"type": "json_object"}
    for body in bodies:
        assert client.post("/v1/chat/completions", json=body).status_code == 200

    assert client.get("/requests", params={"limit": 2}).json() == {"requests": bodies[1:]}
    assert client.get("/requests").json() == {"requests": bodies}
    assert client.get("/requests", params={"limit": 0}).json() == {"requests": []}
    assert client.get("/requests", params={"limit": -1}).status_code == 400


# ----------------------------------------------------------------------------------------------------------
# Embedding via build_app()
# ----------------------------------------------------------------------------------------------------------


def test_build_app_embeds_and_cancels_stall_without_handler_cancellation() -> None:
    """aiohttp's default runner keeps handlers running after a disconnect; the stall must still end."""

    async def scenario() -> None:
        app = build_app(MockConfig(stall_s=300))
        runner = web.AppRunner(app, access_log=None)  # handler_cancellation=False: the polling path
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        mock = app[MOCK_LLM_KEY]
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        try:
            async with aiohttp.ClientSession() as session:
                async with session.post(url, json={"messages": dspy_messages("embedded")}) as response:
                    assert (await response.json())["choices"][0]["message"]["content"].startswith(
                        "[[ ## answer ## ]]\nEcho: embedded"
                    )
                with pytest.raises(asyncio.TimeoutError):
                    stall = {"messages": dspy_messages("hang [fault=stall]")}
                    await session.post(url, json=stall, timeout=aiohttp.ClientTimeout(total=0.3))
            assert mock.stats.in_flight == 1
            for _ in range(60):
                if mock.stats.in_flight == 0:
                    break
                await asyncio.sleep(0.05)
            assert mock.stats.in_flight == 0
            assert (mock.stats.requests, mock.stats.completions, mock.stats.faults) == (2, 1, 1)
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


# ----------------------------------------------------------------------------------------------------------
# Real DSPy end to end
# ----------------------------------------------------------------------------------------------------------


def test_dspy_predict(lm: dspy.LM) -> None:
    with dspy.context(lm=lm):
        prediction = dspy.Predict("question -> answer")(question="What is the capital of Peru?")
    assert "What is the capital of Peru?" in prediction.answer


def test_dspy_chain_of_thought(lm: dspy.LM) -> None:
    with dspy.context(lm=lm):
        prediction = dspy.ChainOfThought("question -> answer")(question="Why is the sky blue?")
    assert prediction.reasoning == "Echo: Why is the sky blue?"
    assert prediction.answer == "Echo: Why is the sky blue?"


def test_dspy_typed_signature(lm: dspy.LM) -> None:
    question = "Is this a good film?"
    with dspy.context(lm=lm):
        prediction = dspy.Predict(Typed)(question=question)
    assert prediction.count == len(question)
    assert prediction.score == float(len(question))
    assert prediction.ok is True
    assert prediction.tags == [f"Echo: {question}"]
    assert prediction.sentiment == "positive"
    assert prediction.extra == {"echo": f"Echo: {question}"}


def test_dspy_json_adapter_without_response_format(lm: dspy.LM, client: httpx.Client) -> None:
    """DSPy knows no response_format support for ``openai/mock-model``: only the prompt asks for JSON."""
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        prediction = dspy.Predict(Typed)(question="json please")
    assert (prediction.count, prediction.tags, prediction.sentiment) == (
        11,
        ["Echo: json please"],
        "positive",
    )
    (sent,) = client.get("/requests").json()["requests"]
    assert "response_format" not in sent


def test_dspy_json_adapter_with_json_schema_response_format(
    server: MockProcess, client: httpx.Client
) -> None:
    """A model DSPy believes supports structured outputs makes it send a ``json_schema`` response_format."""
    schema_lm = dspy.LM("openai/gpt-4o-mini", api_base=f"{server.base_url}/v1", api_key="mock", cache=False)

    class Structured(dspy.Signature):
        question: str = dspy.InputField()
        count: int = dspy.OutputField()
        tags: list[str] = dspy.OutputField()
        sentiment: Literal["positive", "negative"] = dspy.OutputField()

    with dspy.context(lm=schema_lm, adapter=dspy.JSONAdapter()):
        prediction = dspy.Predict(Structured)(question="schema please")
    assert (prediction.count, prediction.tags, prediction.sentiment) == (
        13,
        ["Echo: schema please"],
        "positive",
    )
    (sent,) = client.get("/requests").json()["requests"]
    assert sent["response_format"]["type"] == "json_schema"
    assert set(sent["response_format"]["json_schema"]["schema"]["properties"]) == {
        "count",
        "tags",
        "sentiment",
    }


class LookAndListen(dspy.Signature):
    """Describe the picture and the sound."""

    image: dspy.Image = dspy.InputField()
    sound: dspy.Audio = dspy.InputField()
    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


def test_dspy_image_and_audio_reach_the_mock_as_content_parts(lm: dspy.LM, client: httpx.Client) -> None:
    image = dspy.Image("https://example.com/owl.jpg")
    sound = dspy.Audio("data:audio/wav;base64," + base64.b64encode(WAV_BYTES).decode())
    with dspy.context(lm=lm):
        prediction = dspy.Predict(LookAndListen)(image=image, sound=sound, question="what is it?")
    assert prediction.answer == "Echo: [image_url https://example.com/owl.jpg]"
    (sent,) = client.get("/requests").json()["requests"]
    parts = [part for part in sent["messages"][-1]["content"] if part["type"] != "text"]
    assert parts == [
        {"type": "image_url", "image_url": {"url": "https://example.com/owl.jpg"}},
        {
            "type": "input_audio",
            "input_audio": {"data": base64.b64encode(WAV_BYTES).decode(), "format": "wav"},
        },
    ]


def test_dspy_usage_marker_reaches_usage_tracking(lm: dspy.LM) -> None:
    with dspy.context(lm=lm, track_usage=True):
        prediction = dspy.Predict("question -> answer")(question="count me [usage=17,5]")
    usage = prediction.get_lm_usage()["openai/mock-model"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (17, 5, 22)


def test_dspy_malformed_fault_raises_parse_error(lm: dspy.LM, client: httpx.Client) -> None:
    with dspy.context(lm=lm), pytest.raises(AdapterParseError):
        dspy.Predict("question -> answer")(question="refuse [fault=malformed]")
    stats = get_stats(client)
    assert stats["faults"] == stats["requests"] >= 1  # ChatAdapter, then its JSONAdapter fallback


def test_dspy_streaming(lm: dspy.LM) -> None:
    question = "stream this answer in several pieces please"
    program = dspy.streamify(
        dspy.Predict("question -> answer"),
        stream_listeners=[dspy.streaming.StreamListener(signature_field_name="answer")],
    )

    async def collect() -> tuple[list[str], Any]:
        pieces: list[str] = []
        final = None
        with dspy.context(lm=lm):
            async for item in program(question=question):
                if isinstance(item, dspy.streaming.StreamResponse):
                    pieces.append(item.chunk)
                elif isinstance(item, dspy.Prediction):
                    final = item
        return pieces, final

    pieces, final = asyncio.run(collect())
    assert len(pieces) >= 3
    assert "".join(pieces) == f"Echo: {question}"
    assert final is not None and final.answer == f"Echo: {question}"


# ----------------------------------------------------------------------------------------------------------
# Fault scripts (POST /faults): stateful faults switched at runtime, per model
# ----------------------------------------------------------------------------------------------------------


def chat_as(client: httpx.Client, model: str, question: str) -> httpx.Response:
    return client.post("/v1/chat/completions", json={"model": model, "messages": dspy_messages(question)})


@pytest.fixture
def scripts(client: httpx.Client) -> Iterator[httpx.Client]:
    """The client, with every fault script cleared afterwards (the server is shared by the module)."""
    try:
        yield client
    finally:
        client.delete("/faults").raise_for_status()


def test_fault_script_sequence_then_normal_for_its_model_only(scripts: httpx.Client) -> None:
    script = {"model": "flaky", "sequence": ["429", "429"], "retry_after": 0.5}
    assert scripts.post("/faults", json=script).json() == {
        "model": "flaky",
        "sequence": ["429", "429"],
        "then": None,
    }

    first, second, third = (chat_as(scripts, "flaky", f"q{i}") for i in range(3))
    other = chat_as(scripts, "steady", "q")

    assert [first.status_code, second.status_code, third.status_code] == [429, 429, 200]
    assert first.headers["retry-after"] == second.headers["retry-after"] == "0.5"
    assert "Echo: q2" in content_of(third)
    assert other.status_code == 200
    assert scripts.get("/stats/models").json() == {"flaky": 3, "steady": 1}
    assert get_stats(scripts)["faults"] == 2


def test_fault_script_always_fail_until_cleared_and_markers_still_win(scripts: httpx.Client) -> None:
    scripts.post("/faults", json={"sequence": [], "then": "500"}).raise_for_status()

    assert [chat_as(scripts, model, "x").status_code for model in ("a", "b", "a")] == [500, 500, 500]
    assert chat_as(scripts, "a", "opt out [fault=none]").status_code == 200

    scripts.delete("/faults").raise_for_status()
    assert chat_as(scripts, "a", "x").status_code == 200
    assert scripts.get("/stats/models").json() == {"a": 4, "b": 1}
    scripts.post("/stats/reset").raise_for_status()
    assert scripts.get("/stats/models").json() == {}


def test_fault_script_rejects_unknown_faults(scripts: httpx.Client) -> None:
    for body in ({"sequence": ["teapot"]}, {"then": 7}, {"sequence": "429"}, {"retry_after": -1}, []):
        response = scripts.post("/faults", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["message"]
