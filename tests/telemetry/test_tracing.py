"""OpenTelemetry traces: a real server exports over OTLP/HTTP to a receiver in the test.

The receiver (``loadtest/otlp_receiver.py``) is a real HTTP server on loopback decoding each
export with opentelemetry-proto's ``ExportTraceServiceRequest``. One traced server serves the
load-test fixture (SimplePredict sync, AsyncPredict native async, MultiStep with two LM calls and
room for one call at a time) against the mock LLM for the whole module; the tokens come from the
mock's ``[usage=P,C]`` marker, so they are exact. Three more servers check what one cannot:
gunicorn's workers each exporting and flushing at shutdown, a collector that is down, the SDK
disabled; and in-process, that with ``OTEL_*`` unset nothing is built at all.
"""

import asyncio
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from django.core.exceptions import MiddlewareNotUsed
from mcp import Client
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from loadtest.otlp_receiver import OtlpReceiver, ReceivedSpan
from programs import events
from telemetry import tracing
from telemetry.server_spans import RouteNaming, traced
from telemetry.tracing import configured, split_model
from tests.databases import ServerDatabase, server_database
from tests.support import ROOT, Running, project_config, service
from tests.telemetry.conftest import graceful_stop, wait_for

pytestmark = pytest.mark.integration

FIXTURE = ROOT / "loadtest" / "fixture_project"
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "dspysite/gunicorn.conf.py"]
SERVICE_NAME = "traces-test"


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tracing")


@pytest.fixture(scope="module")
def config(tmp: Path, mock: Running) -> Path:
    # MultiStep admits one call at a time and queues the next for up to 30 s (server.max_queue_ms).
    path = project_config(
        FIXTURE, tmp, mock.url, programs={"MultiStep": {"max_concurrent": 1}}, server={"max_queue_ms": 30_000}
    )
    written = yaml.safe_load(path.read_text())
    for entry in written["models"]["registry"].values():
        entry["num_retries"] = 1  # one retry after an upstream failure: a span event
    path.write_text(yaml.safe_dump(written))
    return path


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def tracing_env(receiver: OtlpReceiver, **extra: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": SERVICE_NAME,
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # export within 50 ms, not the default 5 s
        "OTEL_PYTHON_EXCLUDED_URLS": "^/health/",  # the readiness polls
        "TELEMETRY_FLUSH_INTERVAL_S": "0.2",
        **extra,
    }


@pytest.fixture(scope="module")
def database(tmp: Path) -> Iterator[ServerDatabase]:
    with server_database(tmp) as db:
        yield db


@pytest.fixture(scope="module")
def server(tmp: Path, config: Path, receiver: OtlpReceiver, database: ServerDatabase) -> Iterator[Running]:
    with service(tmp, FIXTURE, config, **database.env(), **tracing_env(receiver)) as running:
        yield running


def traceparent(sampled: bool = True) -> tuple[str, str, str]:
    """A client's W3C trace context: (header, trace id, span id)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}", trace_id, span_id


def post(server: Running, program: str, question: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{server.url}/{program}", json={"question": question}, headers=headers, timeout=30)


def trace_of(receiver: OtlpReceiver, request_id: str, count: int) -> dict[str, list[ReceivedSpan]]:
    """The ``count`` spans of the trace whose server span answered ``request_id``, by name."""

    def complete(spans: list[ReceivedSpan]) -> list[ReceivedSpan] | None:
        server = [s for s in spans if s.kind == "SERVER" and answered(s, request_id)]
        if not server:
            return None
        in_trace = [s for s in spans if s.trace_id == server[0].trace_id]
        return in_trace if len(in_trace) >= count else None

    by_name: dict[str, list[ReceivedSpan]] = {}
    for span in receiver.wait_for(complete, what=f"{count} spans of request {request_id}"):
        by_name.setdefault(span.name, []).append(span)
    return by_name


def answered(span: ReceivedSpan, request_id: str) -> bool:
    return span.attributes.get("dspy.request_id") == request_id


def only(spans: dict[str, list[ReceivedSpan]], name: str) -> ReceivedSpan:
    assert len(spans.get(name, [])) == 1, (name, spans)
    return spans[name][0]


def assert_inside(child: ReceivedSpan, parent: ReceivedSpan) -> None:
    assert child.parent_span_id == parent.span_id
    assert child.trace_id == parent.trace_id
    assert parent.start_ns <= child.start_ns <= child.end_ns <= parent.end_ns


@pytest.mark.parametrize("program", ["SimplePredict", "AsyncPredict"])
@pytest.mark.parametrize("from_client", [False, True], ids=["new-trace", "traceparent"])
def test_a_call_is_a_server_span_a_program_span_and_an_lm_span(
    server: Running, receiver: OtlpReceiver, program: str, from_client: bool
) -> None:
    header, client_trace, client_span = traceparent()
    headers = {"traceparent": header} if from_client else {}
    response = post(server, program, f"traced {program} {from_client} [usage=11,7]", **headers)
    assert response.status_code == 200, response.text
    request_id = response.headers["X-Request-ID"]

    spans = trace_of(receiver, request_id, 3)
    assert sorted(spans) == [f"POST /{program}", "chat mock-model", f"program {program}"]
    http = only(spans, f"POST /{program}")
    call = only(spans, f"program {program}")
    lm = only(spans, "chat mock-model")

    assert http.kind == "SERVER"
    assert http.attributes["http.request.method"] == "POST"
    assert http.attributes["url.path"] == f"/{program}"
    assert http.attributes["http.route"] == f"/{program}"
    assert http.attributes["http.response.status_code"] == 200
    assert http.attributes["dspy.request_id"] == request_id
    assert http.resource["service.name"] == SERVICE_NAME
    assert f"Tracing: OTLP/HTTP to {receiver.url} as {SERVICE_NAME}" in server.log()
    assert not [s for s in receiver.spans if s.attributes.get("url.path", "").startswith("/health/")]
    if from_client:  # the client's trace goes on: its span is the server span's parent
        assert (http.trace_id, http.parent_span_id) == (client_trace, client_span)
    else:
        assert http.parent_span_id == ""

    # The sync program runs on a worker thread, the async one on the loop: the parents are the same.
    assert_inside(call, http)
    assert call.kind == "INTERNAL"
    assert call.attributes["dspy.program"] == program
    assert call.attributes["dspy.request_id"] == request_id
    assert call.attributes["dspy.source"] == "http"
    assert call.attributes["dspy.status_code"] == 200
    assert call.attributes["dspy.usage.input_tokens"] == 11
    assert call.attributes["dspy.usage.output_tokens"] == 7
    assert call.status == "UNSET"

    assert_inside(lm, call)
    assert lm.kind == "CLIENT"
    assert lm.attributes["gen_ai.operation.name"] == "chat"
    assert lm.attributes["gen_ai.provider.name"] == "openai"
    assert lm.attributes["gen_ai.request.model"] == "mock-model"
    assert lm.attributes["gen_ai.response.model"] == "mock-model"  # the mock answers with the name asked
    assert lm.attributes["gen_ai.usage.input_tokens"] == 11
    assert lm.attributes["gen_ai.usage.output_tokens"] == 7
    assert lm.attributes["dspy.model_alias"] == "mock"
    assert "error.type" not in lm.attributes


def test_two_lm_calls_are_two_children_and_a_queued_call_shows_its_wait(
    server: Running, receiver: OtlpReceiver
) -> None:
    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            return await asyncio.gather(
                *(client.post("/MultiStep", json={"question": f"queued {n} [delay=400]"}) for n in range(2))
            )

    responses = asyncio.run(both())  # MultiStep admits one call at a time: the other one waits
    assert [r.status_code for r in responses] == [200, 200]

    waits = []
    for response in responses:
        spans = trace_of(receiver, response.headers["X-Request-ID"], 4)
        call = only(spans, "program MultiStep")
        lms = spans["chat mock-model"]
        assert len(lms) == 2
        for lm in lms:
            assert_inside(lm, call)
        assert lms[0].end_ns <= lms[1].start_ns or lms[1].end_ns <= lms[0].start_ns  # one after the other
        waits += [event for event in call.events if event.name == "dspy.admission.wait"]
    assert len(waits) == 1, waits  # the second call waited, the first did not
    assert waits[0].attributes["dspy.limiter"] == "MultiStep"
    assert waits[0].attributes["dspy.admitted"] is True
    assert waits[0].attributes["dspy.waited_ms"] > 0


def test_batch_items_and_a_stream_are_program_spans_under_their_request(
    server: Running, receiver: OtlpReceiver
) -> None:
    items = [{"question": f"item {n} [usage=2,1]"} for n in range(2)]
    batch = httpx.post(f"{server.url}/AsyncPredict/batch", json={"inputs": items}, timeout=30)
    assert batch.status_code == 200, batch.text
    spans = trace_of(receiver, batch.headers["X-Request-ID"], 5)
    http = only(spans, "POST /AsyncPredict/batch")
    calls = spans["program AsyncPredict"]
    assert sorted(call.attributes["dspy.request_id"] for call in calls) == [
        f"{batch.headers['X-Request-ID']}.{n}" for n in range(2)
    ]
    for call in calls:  # each item in a task of its own, under the request's span
        assert_inside(call, http)
        assert call.attributes["dspy.source"] == "batch"
        assert len([lm for lm in spans["chat mock-model"] if lm.parent_span_id == call.span_id]) == 1

    stream = httpx.post(f"{server.url}/SimplePredict/stream", json={"question": "streamed"}, timeout=30)
    assert stream.status_code == 200 and "event: final" in stream.text
    spans = trace_of(receiver, stream.headers["X-Request-ID"], 3)
    call = only(spans, "program SimplePredict")
    assert_inside(call, only(spans, "POST /SimplePredict/stream"))  # the call runs in a task of its own
    assert call.attributes["dspy.source"] == "stream"
    assert_inside(only(spans, "chat mock-model"), call)


def test_an_upstream_error_is_on_the_lm_span_the_program_span_and_the_server_span(
    server: Running, receiver: OtlpReceiver
) -> None:
    response = post(server, "AsyncPredict", "fails [fault=500]")
    assert response.status_code == 502, response.text
    spans = trace_of(receiver, response.headers["X-Request-ID"], 3)

    lm = only(spans, "chat mock-model")
    assert lm.status == "ERROR"
    assert lm.attributes["error.type"]  # the exception's class name
    call = only(spans, "program AsyncPredict")
    assert call.status == "ERROR"
    assert call.attributes["error.type"] == response.json()["error_type"]
    assert call.attributes["dspy.status_code"] == 502
    assert "Upstream LLM error" in call.status_message
    http = only(spans, "POST /AsyncPredict")
    assert http.status == "ERROR"
    assert http.attributes["http.response.status_code"] == 502
    assert http.attributes["error.type"] == "502"


def test_an_upstream_retry_is_an_event_on_the_lm_span(
    server: Running, receiver: OtlpReceiver, mock: Running
) -> None:
    """The provider's 429 is retried (issue 14): the LM span shows the failed attempt."""
    script = {"model": "mock-model", "sequence": ["429"], "retry_after": 0}
    assert httpx.post(f"{mock.url}/faults", json=script).status_code == 200
    try:
        response = post(server, "AsyncPredict", "answered on the second attempt")
    finally:
        httpx.delete(f"{mock.url}/faults")
    assert response.status_code == 200, response.text
    spans = trace_of(receiver, response.headers["X-Request-ID"], 3)

    lm = only(spans, "chat mock-model")
    (retry,) = [event for event in lm.events if event.name == "dspy.lm.retry"]
    assert retry.attributes["dspy.attempt"] == 1
    assert retry.attributes["dspy.status"] == 429
    assert retry.attributes["dspy.retrying"] is True
    assert lm.status != "ERROR"  # the call itself succeeded


def test_the_trace_id_is_on_the_log_row_and_in_api_logs(
    server: Running, receiver: OtlpReceiver, database: ServerDatabase
) -> None:
    header, trace_id, _ = traceparent()
    response = post(server, "SimplePredict", "logged with its trace", traceparent=header)
    request_id = response.headers["X-Request-ID"]
    sql = "SELECT trace_id FROM telemetry_inferencelog WHERE request_id = %s"
    rows = wait_for(lambda: database.query(sql, [request_id]), what="the log row")
    assert rows == [(trace_id,)]
    logs = httpx.get(f"{server.url}/api/logs/SimplePredict", params={"limit": 50}, timeout=30).json()["logs"]
    assert [entry["trace_id"] for entry in logs if entry["request_id"] == request_id] == [trace_id]

    # A client that did not sample its trace: no span is exported and the row has no trace id.
    header, unsampled, _ = traceparent(sampled=False)
    response = post(server, "SimplePredict", "not sampled", traceparent=header)
    request_id = response.headers["X-Request-ID"]
    assert wait_for(lambda: database.query(sql, [request_id]), what="the log row") == [(None,)]
    later = post(server, "SimplePredict", "after it")  # exported after any span of the request before
    trace_of(receiver, later.headers["X-Request-ID"], 3)
    assert not [span for span in receiver.spans if span.trace_id == unsampled]


def test_an_mcp_tool_call_is_a_program_span_with_its_lm_span(server: Running, receiver: OtlpReceiver) -> None:
    async def call() -> Any:
        async with Client(f"{server.url}/mcp", mode="2026-07-28") as client:
            return await client.call_tool("AsyncPredict", {"question": "from mcp [usage=5,3]"})

    assert not asyncio.run(call()).is_error

    def traced(spans: list[ReceivedSpan]) -> list[ReceivedSpan] | None:
        """The trace of the tool call, once its program, LM and /mcp server spans are all in."""
        calls = [s for s in spans if s.attributes.get("dspy.source") == "mcp"]
        if not calls:
            return None
        in_trace = [s for s in spans if s.trace_id == calls[0].trace_id]
        has_lm = any(s.parent_span_id == calls[0].span_id for s in in_trace)
        has_server = any(s.attributes.get("url.path") == "/mcp" for s in in_trace)
        return in_trace if has_lm and has_server else None

    spans = receiver.wait_for(traced, what="the tool call's spans")
    by_id = {span.span_id: span for span in spans}
    program = next(s for s in spans if s.attributes.get("dspy.source") == "mcp")
    lm = next(s for s in spans if s.parent_span_id == program.span_id)
    assert program.name == "program AsyncPredict"
    assert program.attributes["dspy.entry"] == "AsyncPredict"
    assert_inside(lm, program)
    assert lm.attributes["gen_ai.usage.input_tokens"] == 5
    # Under the request's server span, through the MCP SDK's own span (the global provider's).
    ancestors = []
    parent = by_id.get(program.parent_span_id)
    while parent is not None:
        ancestors.append(parent)
        parent = by_id.get(parent.parent_span_id)
    assert [s.name for s in ancestors] == ["tools/call AsyncPredict", "POST"]
    assert ancestors[-1].attributes["url.path"] == "/mcp"


def test_each_gunicorn_worker_exports_its_own_spans_and_flushes_them_at_shutdown(
    tmp: Path, config: Path, tmp_path: Path
) -> None:
    with OtlpReceiver() as receiver, server_database(tmp_path) as database:
        env = tracing_env(
            receiver,
            OTEL_BSP_SCHEDULE_DELAY="600000",  # nothing is exported before the shutdown's flush
            WEB_CONCURRENCY="2",
            PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
        )
        with service(tmp_path, FIXTURE, config, GUNICORN, **database.env(), **env) as running:
            wait_for(lambda: running.log().count("Application startup complete") == 2, 60, "both workers")
            for n in range(24):  # a new connection each: the kernel spreads them over both workers
                assert post(running, "AsyncPredict", f"worker {n}").status_code == 200
            assert receiver.requests == 0
            assert graceful_stop(running)
        servers = [span for span in receiver.spans if span.kind == "SERVER"]
        assert len(servers) == 24
        assert len({span.resource["service.instance.id"] for span in servers}) == 2


def test_a_collector_that_is_down_costs_no_request(tmp_path: Path, config: Path) -> None:
    with OtlpReceiver() as receiver:
        pass  # its port is closed again: nothing listens there
    with server_database(tmp_path) as database:
        env = tracing_env(receiver, OTEL_EXPORTER_OTLP_TIMEOUT="1")
        with service(tmp_path, FIXTURE, config, **database.env(), **env) as running:
            responses = [post(running, "AsyncPredict", f"collector down {n}") for n in range(10)]
            assert [r.status_code for r in responses] == [200] * 10
            rows = "SELECT COUNT(*) FROM telemetry_inferencelog WHERE trace_id IS NOT NULL"
            wait_for(lambda: database.query(rows) == [(10,)], what="ten traced rows")
            assert graceful_stop(running)  # the shutdown's flush gives up within the exporter's timeout


def test_with_the_sdk_disabled_nothing_is_traced_or_exported(tmp_path: Path, config: Path) -> None:
    with OtlpReceiver() as receiver, server_database(tmp_path) as database:
        env = tracing_env(receiver, OTEL_SDK_DISABLED="true")
        with service(tmp_path, FIXTURE, config, **database.env(), **env) as running:
            header, _, _ = traceparent()
            response = post(running, "AsyncPredict", "untraced", traceparent=header)
            assert response.status_code == 200
            sql = "SELECT trace_id FROM telemetry_inferencelog WHERE request_id = %s"
            rows = wait_for(lambda: database.query(sql, [response.headers["X-Request-ID"]]), what="the row")
            assert rows == [(None,)]
            assert graceful_stop(running)  # a pipeline would flush here
        assert receiver.requests == 0
        assert "Tracing:" not in running.log()


def test_unset_no_layer_middleware_subscriber_or_exporter_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    subscribers = {event.name: len(event) for event in events.ALL_EVENTS}

    async def app(scope: Any, receive: Any, send: Any) -> None: ...

    assert traced(app) is app  # the request path does not pass through the server-span layer
    with pytest.raises(MiddlewareNotUsed):
        RouteNaming(app)
    asyncio.run(tracing.tracing_startup())
    assert tracing.active_tracer() is None
    assert tracing.current_trace_id() is None
    assert {event.name: len(event) for event in events.ALL_EVENTS} == subscribers
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)  # the API's no-op proxy


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_tracing_is_on_only_with_an_otlp_endpoint(environ: dict[str, str], expected: bool) -> None:
    assert configured(environ) is expected


def test_gen_ai_provider_names_from_model_strings() -> None:
    assert split_model("openai/gpt-4o-mini") == ("openai", "gpt-4o-mini")
    assert split_model("anthropic/claude-sonnet-4") == ("anthropic", "claude-sonnet-4")
    assert split_model("vertex_ai/gemini-2.5-pro") == ("gcp.vertex_ai", "gemini-2.5-pro")
    assert split_model("gpt-4o") == ("openai", "gpt-4o")
