"""An OTLP/HTTP trace receiver on loopback, for the tests and the tracing cost measurement.

It answers ``POST /v1/traces`` as a collector does (200, an empty ``ExportTraceServiceResponse``).
With ``decode=True`` (the tests) each request is parsed with opentelemetry-proto's
``ExportTraceServiceRequest`` and its spans kept as :class:`ReceivedSpan`; with ``decode=False``
(``loadtest/trace_cost.py``) the body is read and dropped, so the receiver costs the server
nothing but the export itself.

    with OtlpReceiver() as receiver:                   # OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url
        spans = receiver.wait_for(lambda spans: len(spans) >= 3, timeout_s=10)
"""

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

KINDS = {value: name.removeprefix("SPAN_KIND_") for name, value in Span.SpanKind.items()}
STATUSES = {value: name.removeprefix("STATUS_CODE_") for name, value in Status.StatusCode.items()}


@dataclass
class ReceivedEvent:
    name: str
    attributes: dict[str, Any]


@dataclass
class ReceivedSpan:
    """One exported span, its ids as hex strings ("" for no parent) and plain attribute values."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: str  # SERVER, CLIENT, INTERNAL...
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status: str  # UNSET, OK, ERROR
    status_message: str
    events: list[ReceivedEvent]
    resource: dict[str, Any]
    scope: str


@dataclass
class OtlpReceiver:
    decode: bool = True
    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: int = 0  # export requests received
    url: str = ""  # the OTLP base URL: OTEL_EXPORTER_OTLP_ENDPOINT
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _server: ThreadingHTTPServer | None = None

    def __enter__(self) -> "OtlpReceiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received(body, self.headers.get("Content-Encoding", ""))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True).start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def received(self, body: bytes, encoding: str) -> None:
        spans: list[ReceivedSpan] = []
        if self.decode:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            spans = decode_spans(ExportTraceServiceRequest.FromString(body))
        with self._changed:
            self.requests += 1
            self.spans.extend(spans)
            self._changed.notify_all()

    def wait_for(
        self, condition: Callable[[list[ReceivedSpan]], Any], timeout_s: float = 15.0, what: str = "spans"
    ) -> Any:
        """Wait until ``condition(spans received so far)`` is truthy; return its value."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not (value := condition(list(self.spans))):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}: {self.spans!r}")
                self._changed.wait(remaining)
            return value


def decode_spans(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    return [
        received_span(span, attributes(resource_spans.resource.attributes), scope_spans.scope.name)
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]


def received_span(span: Span, resource: dict[str, Any], scope: str) -> ReceivedSpan:
    return ReceivedSpan(
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        kind=KINDS[span.kind],
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        attributes=attributes(span.attributes),
        status=STATUSES[span.status.code],
        status_message=span.status.message,
        events=[ReceivedEvent(event.name, attributes(event.attributes)) for event in span.events],
        resource=resource,
        scope=scope,
    )


def attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: value(pair.value) for pair in pairs}


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(item) for item in any_value.array_value.values]
    if kind == "kvlist_value":
        return attributes(any_value.kvlist_value.values)
    return getattr(any_value, kind)
