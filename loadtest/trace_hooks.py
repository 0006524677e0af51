"""CPU of the tracing hooks alone, in this process: where ``trace_cost.py``'s difference goes.

Runs the request path's tracing code ``--requests`` times on the event loop, with no server and
no model: the server-span layer (``telemetry.server_spans.ServerSpans``) around an ASGI app that
emits what a one-LM-call program call emits (``request_started``, ``lm_call_started``,
``lm_call_finished``, the log row's trace id, ``request_finished``) to the subscribers of
``telemetry.tracing``, then answers. Three pipelines, in turns:

* ``unsampled``: ``ALWAYS_OFF`` sampler (the hooks, no span recorded);
* ``dropped``: every span recorded and handed to an exporter that drops it (the SDK's span
  bookkeeping on the request path);
* ``exported``: the real OTLP/HTTP exporter posting to a local receiver that drops the body
  (adds the exporter thread's protobuf encoding and HTTP post).

The CPU is this process's (every thread: the exporter's and the receiver's included), minus that
of the same number of bare sends. The pipeline is installed the way ``tracing_startup`` installs
it, but with the sampler and exporter chosen here (``tracing._tracing``: a measurement script's
access to the module's private state).

    python -m loadtest.trace_hooks --requests 5000
"""

import argparse
import asyncio
import sys
import time
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

from loadtest.otlp_receiver import OtlpReceiver
from programs import events
from telemetry import tracing
from telemetry.server_spans import ServerSpans

MODEL = "served-mock/mock-model"
SCOPE = {
    "type": "http", "method": "POST", "path": "/AsyncPredict", "scheme": "http", "http_version": "1.1",
    "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"), (b"user-agent", b"x")],
}  # fmt: skip
START = {"type": "http.response.start", "status": 200, "headers": [(b"x-request-id", b"rid")]}
BODY = {"type": "http.response.body", "body": b'{"answer": "a"}'}


class Dropped(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


async def program_call(scope: Any, receive: Any, send: Any) -> None:
    """What one call of a one-LM-call program emits, then its answer."""
    tracing.on_request_started(events.RequestStarted("AsyncPredict", "rid"))
    tracing.on_lm_call_started(events.LMCallStarted("rid", MODEL, "call"))
    tracing.on_lm_call_finished(
        events.LMCallFinished("rid", MODEL, 1.0, 120, 8, None, None, "call", "mock-model")
    )
    tracing.current_trace_id()
    tracing.on_request_finished(events.RequestFinished("AsyncPredict", "rid", 200, 1.0, 120, 8, None, ({},)))
    await send(START)
    await send(BODY)


async def ignore(message: Any) -> None:
    pass


async def nothing() -> Any:
    return {}


def measure(mode: str, receiver: OtlpReceiver, requests: int) -> float:
    """µs of CPU per request for ``mode``."""
    exporter = OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces") if mode == "exported" else Dropped()
    provider = TracerProvider(sampler=ALWAYS_OFF if mode == "unsampled" else ALWAYS_ON)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=4 * requests))  # none dropped
    tracing._tracing = tracing.Tracing(provider, {MODEL: ("mock", "openai", "mock-model")})
    layer = ServerSpans(program_call)

    async def traced() -> None:
        for _ in range(requests):
            await layer(SCOPE, nothing, ignore)

    async def bare() -> None:  # the same sends without the tracing: subtracted
        for _ in range(requests):
            await ignore(START)
            await ignore(BODY)

    try:
        started = time.process_time()
        asyncio.run(traced())
        provider.shutdown()  # the last batches exported: their CPU counts
        spent = time.process_time() - started
    finally:
        tracing._tracing = None
    started = time.process_time()
    asyncio.run(bare())
    return (spent - (time.process_time() - started)) / requests * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    modes = ("unsampled", "dropped", "exported")
    results: dict[str, list[float]] = {mode: [] for mode in modes}
    with OtlpReceiver(decode=False) as receiver:
        for _ in range(args.rounds):
            for mode in modes:
                results[mode].append(measure(mode, receiver, args.requests))
    print("| pipeline | CPU µs per request (rounds) |\n|---|---|")
    for mode, values in results.items():
        shown = ", ".join(f"{value:.0f}" for value in values)
        print(f"| {mode} | {sum(values) / len(values):.0f} ({shown}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
