"""``POST /{Program}/stream`` over a real socket: chunks before the final event, errors as events,
and a client that goes away frees the program's slot and the upstream call."""

import json
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support import Running

pytestmark = pytest.mark.integration


@dataclass
class Event:
    name: str  # "message" for a bare data line
    data: str
    at: float  # seconds since the request was sent

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class Stream:
    status: int
    headers: httpx.Headers
    events: list[Event] = field(default_factory=list)
    body: str = ""

    def named(self, name: str) -> list[Event]:
        return [event for event in self.events if event.name == name]


def stream(server: Running, program: str, body: Any, **headers: str) -> Stream:
    started = time.monotonic()
    with httpx.stream(
        "POST", f"{server.url}/{program}/stream", json=body, headers=headers, timeout=30
    ) as response:
        result = Stream(response.status_code, response.headers)
        if response.headers.get("content-type") != "text/event-stream":
            result.body = response.read().decode()
            return result
        name = "message"
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                result.events.append(Event(name, line.removeprefix("data: "), time.monotonic() - started))
                name = "message"
    return result


def joined_chunks(result: Stream) -> dict[str, str]:
    fields: dict[str, str] = {}
    for event in result.named("chunk"):
        chunk = event.json()
        fields[chunk["field"]] = fields.get(chunk["field"], "") + chunk["chunk"]
    return fields


@pytest.mark.parametrize("program", ["Story", "StorySync"])  # on the event loop, and in the worker pool
def test_output_fields_stream_before_the_final_event(devx_server: Running, program: str) -> None:
    topic = f"cats {uuid.uuid4().hex[:6]} [delay=600]"
    result = stream(devx_server, program, {"topic": topic})
    assert result.status == 200
    assert result.headers["content-type"] == "text/event-stream"
    assert result.headers["cache-control"] == "no-cache"
    names = [event.name for event in result.events]
    assert names[-2:] == ["final", "message"] and result.events[-1].data == "[DONE]"
    chunks = result.named("chunk")
    assert len(chunks) > 1
    assert names.index("final") > max(i for i, name in enumerate(names) if name == "chunk")
    final = result.named("final")[0]
    assert final.json() == {
        "type": "final",
        "outputs": {"title": f"Echo: {topic}", "story": f"Echo: {topic}"},
    }
    # The chunks are the fields, piece by piece, and both fields streamed.
    assert joined_chunks(result) == {"title": f"Echo: {topic}", "story": f"Echo: {topic}"}
    assert {event.json()["predictor"] for event in chunks} == {"write"}
    assert [event.json()["last"] for event in chunks].count(True) == 2
    # Sent as they were written (the mock spreads 600 ms over its chunks), not all at the end.
    assert final.at - chunks[0].at >= 0.25


def test_every_request_streams_with_listeners_of_its_own(devx_server: Running) -> None:
    # A StreamListener streams only on its first use: a reused one would send no chunk the second time.
    for attempt in range(3):
        result = stream(devx_server, "Story", {"topic": f"again {attempt}"})
        assert len(result.named("chunk")) >= 2, attempt


def test_chain_of_thought_streams_reasoning_and_answer(devx_server: Running) -> None:
    result = stream(devx_server, "EchoAsync", {"question": "why? [delay=100]"})
    assert set(joined_chunks(result)) == {"reasoning", "answer"}
    assert result.named("final")[0].json()["outputs"]["answer"] == "Echo: why? [delay=100]"


def test_an_upstream_failure_is_an_error_event(devx_server: Running) -> None:
    result = stream(devx_server, "Story", {"topic": "boom [fault=500]"}, **{"X-Request-ID": "stream-err-1"})
    assert result.status == 200
    assert result.headers["x-request-id"] == "stream-err-1"
    assert [event.name for event in result.events] == ["error", "message"]
    error = result.events[0].json()
    assert error["type"] == "error"
    assert error["status"] == 502
    assert error["upstream_status"] == 500
    assert error["program"] == "Story"
    assert result.events[1].data == "[DONE]"


def test_invalid_inputs_are_refused_before_the_stream(devx_server: Running) -> None:
    result = stream(devx_server, "Story", {"subject": "x"})
    assert result.status == 422
    assert "topic" in result.body


def test_a_client_that_disconnects_frees_the_slot_and_the_upstream_call(
    devx_server: Running, llm: Running
) -> None:
    rid = f"gone-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"topic": f"long story {rid} [delay=4000]"}).encode()
    url = urlsplit(devx_server.url)
    request = (
        f"POST /OneAtATime/stream HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
        f"X-Request-ID: {rid}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection((url.hostname, url.port), timeout=10) as client:
        client.sendall(request)
        received = b""
        while b"event: chunk" not in received:  # the LM is writing: the call holds the only slot
            received += client.recv(4096)
        assert received.startswith(b"HTTP/1.1 200")
        busy = httpx.post(f"{devx_server.url}/OneAtATime", json={"topic": "meanwhile"}, timeout=10)
        assert busy.status_code == 429
        disconnected_at = time.monotonic()
    # Gone: well before the 4 s answer would have finished, the slot is free again...
    while True:
        again = httpx.post(f"{devx_server.url}/OneAtATime", json={"topic": "after"}, timeout=10)
        if again.status_code == 200:
            break
        assert again.status_code == 429
        assert time.monotonic() - disconnected_at < 3, "the slot was not released"
        time.sleep(0.02)
    # ...the upstream request was cancelled rather than read to its end...
    deadline = disconnected_at + 3
    while httpx.get(f"{llm.url}/stats").json()["in_flight"] != 0:
        assert time.monotonic() < deadline, "the upstream call is still running"
        time.sleep(0.02)
    # ...and the call is recorded as abandoned by the client (499).
    deadline = time.monotonic() + 15
    while True:
        logs = httpx.get(f"{devx_server.url}/api/logs/OneAtATime", params={"limit": 20}).json()["logs"]
        mine = [log for log in logs if log["request_id"] == rid]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [log["status_code"] for log in mine] == [499]


@pytest.mark.parametrize("program", ["PooledStory", "PooledStorySync"])
def test_programs_running_on_copies_stream_and_give_their_copy_back(
    devx_server: Running, program: str
) -> None:
    # A pool of one copy: a copy not given back would make the next call a 429.
    for attempt in range(3):
        topic = f"pooled {attempt} [delay=200]"
        result = stream(devx_server, program, {"topic": topic})
        assert [event.name for event in result.events][-2:] == ["final", "message"], result.events[-2:]
        assert joined_chunks(result) == {"title": f"Echo: {topic}", "story": f"Echo: {topic}"}
    failed = stream(devx_server, program, {"topic": "fails [fault=500]"})
    assert failed.named("error")[0].json()["status"] == 502
    assert stream(devx_server, program, {"topic": "after a failure"}).named("final")


def test_the_json_adapter_streams_too(devx_server: Running) -> None:
    topic = "json [delay=300]"
    result = stream(devx_server, "JsonStory", {"topic": topic})
    assert result.named("final")[0].json()["outputs"] == {
        "title": f"Echo: {topic}",
        "story": f"Echo: {topic}",
    }
    assert len(result.named("chunk")) > 1
    # DSPy's JSON listener passes the field's raw JSON text through (quotes included, and with the
    # mock's 20-character chunks a little of what follows): the final event is the clean answer.
    chunks = joined_chunks(result)
    assert set(chunks) == {"title", "story"}
    assert all(f"Echo: {topic}"[:10] in text for text in chunks.values())
