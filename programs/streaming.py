"""``POST /{Program}/stream``: Server-Sent Events of the output fields while the LM writes them.

The body is the program's inputs (validated like ``POST /{Program}``: 422 before any event). The
answer is ``200 text/event-stream``::

    event: chunk
    data: {"type": "chunk", "predictor": "predict", "field": "answer", "chunk": "Par", "last": false}

    event: final
    data: {"type": "final", "outputs": {...}}          # exactly what POST /{Program} answers

    data: [DONE]

A failure, at any point after validation (capacity 429, upstream 502, timeout 504, program
500, draining 503), is one ``error`` event instead of ``final``, then ``[DONE]``::

    event: error
    data: {"type": "error", "status": 502, "detail": "...", "error_type": "...", "program": "..."}

How: the call is an ordinary :func:`programs.calls.call_program` (admission, the program's LM
and adapter, timeout, error mapping, telemetry) run as a task inside ``dspy.context(send_stream=...,
stream_listeners=...)``, which is what ``dspy.streamify`` does. The task leases the call's instance
first (``program.lease()``) and builds the listeners on it, one per output field of every
predictor, for each request: a ``StreamListener`` streams only on its first use. The task ends when
the client goes away (its request task is cancelled), which releases the program's slot and
cancels the upstream call; the telemetry record then says 499. A sync program's chunks come from
its worker thread (programs.execution runs a streamed sync call where DSPy can send them from).
"""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import dspy
from anyio.streams.memory import MemoryObjectSendStream
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from dspy.streaming import StreamListener, StreamResponse
from ninja import Router
from pydantic import BaseModel

from programs.calls import call_program
from programs.context import REQUEST_ID_HEADER, VERSION_HEADER, request_id
from programs.execution import CallFailed, classify
from programs.instances import InstancesBusy, Lease
from programs.program import Program, UnknownVersion, VersionAsk, current_ask
from programs.responses import ErrorBody, refusal_responses, stream_responses
from programs.runtime import Runtime
from programs.schemas import with_body_model

# Chunks waiting for the client before the LM call is made to wait (backpressure, not a queue).
BUFFER_CHUNKS = 64
# At most this many events in one write (what is waiting when the relay runs; it never waits for more).
BATCH_EVENTS = 64
DONE = b"data: [DONE]\n\n"


def add_stream_route(router: Router, runtime: Runtime, program: Program, **options: Any) -> None:
    router.add_api_operation(
        f"/{program.name}/stream",
        ["POST"],
        _stream_view(runtime, program),
        response={**refusal_responses(), 404: ErrorBody},  # 404: an unknown X-Program-Version
        operation_id=f"{program.name}_stream",
        summary=f"Run {program.name}, streaming its output fields as Server-Sent Events",
        description=__doc__,
        tags=["streaming"],
        openapi_extra=stream_responses(program),
        **options,
    )


def _stream_view(runtime: Runtime, program: Program) -> Callable[..., Awaitable[HttpResponse]]:
    async def view(request: HttpRequest, payload: BaseModel) -> HttpResponse:
        rid = request_id(request)
        # The version is resolved before the answer starts, so its header names it (and an unknown
        # one is a plain 404); the call enters the lease later, in its own task.
        ask = VersionAsk(request.headers.get(VERSION_HEADER), request.headers)
        scope = current_ask.set(ask)
        try:
            leasing = program.lease()
        except UnknownVersion as exc:
            failure = classify(program, exc)
            response: HttpResponse = failure.response()
        else:
            call = StreamedCall(program, program.inputs.to_kwargs(payload), rid, request.body, (ask, leasing))
            response = sse_response(call.events())
        finally:
            current_ask.reset(scope)
        response[REQUEST_ID_HEADER] = rid
        if ask.version:
            response[VERSION_HEADER] = ask.version
        return response

    return with_body_model(view, program.inputs.model, f"stream_{program.name}")


def sse_response(events: AsyncIterator[bytes]) -> StreamingHttpResponse:
    """A Server-Sent Events response that proxies pass through as it is written."""
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response


def build_listeners(instance: dspy.Module) -> list[StreamListener]:
    """New listeners for one request: every output field of every predictor of ``instance``.

    ``allow_reuse``: a predictor called several times in one request (a ReAct loop, Refine)
    streams every time. Across requests listeners are never shared: each request builds its own.
    """
    return [
        ServedStreamListener(
            signature_field_name=field, predict=predictor, predict_name=name, allow_reuse=True
        )
        for name, predictor in instance.named_predictors()
        for field in predictor.signature.output_fields
    ]


class ServedStreamListener(StreamListener):
    """DSPy 3.4.1's listener, with its cost per chunk independent of the text before it.

    * ``JSONAdapter``: DSPy appends each chunk to the field's text (``+=`` on a dict value copies
      it) and parses the whole text twice per chunk (jiter, partial mode) to see whether the field
      ended: quadratic (15,000 chunks of 20 characters: 63 µs a chunk against 21 µs for 1,000).
      Here the chunks are kept in a list and the text is put together and parsed only when a chunk
      could end the field's value: one holding a ``"`` (the next key starts with one) or a ``}``
      (the object's end). Whatever DSPy's parse then decides is kept as it is.
    * The field's type (``_output_type``, read per chunk) is looked up once: DSPy rebuilt the
      signature's output field dict on every chunk.
    """

    def receive(self, chunk: Any) -> StreamResponse | None:
        if self.stream_end and self.allow_reuse:
            self._json_parts: list[str] = []  # DSPy resets its state for the next stream
        return super().receive(chunk)

    def _json_adapter_handle_stream_chunk(self, token: str, chunk_message: str) -> StreamResponse | None:
        parts = self.__dict__.setdefault("_json_parts", [])
        if '"' not in chunk_message and "}" not in chunk_message:
            parts.append(chunk_message)  # neither a next key nor the object's end: the field goes on
            return (
                StreamResponse(self.predict_name, self.signature_field_name, token, False) if token else None
            )
        state = self.json_adapter_state
        state["field_accumulated_messages"] += "".join(parts)
        parts.clear()
        return super()._json_adapter_handle_stream_chunk(token, chunk_message)

    @property
    def _output_type(self) -> type | None:
        if "_field_type" not in self.__dict__:
            self.__dict__["_field_type"] = StreamListener._output_type.fget(self)  # type: ignore[attr-defined]
        return self.__dict__["_field_type"]


def listener_adapter(adapter: dspy.Adapter) -> dspy.Adapter:
    """The DSPy adapter a listener understands for a program's adapter (maybe a subclass).

    ``StreamListener`` picks its field markers by the adapter's class *name*: a subclass of
    ``ChatAdapter`` (this service's ``ServedChatAdapter``) must be shown as a ``ChatAdapter``.
    """
    for base in (dspy.JSONAdapter, dspy.XMLAdapter, dspy.ChatAdapter):  # JSON and XML subclass Chat
        if isinstance(adapter, base):
            return _PLAIN_ADAPTERS.setdefault(base, base())
    return adapter


_PLAIN_ADAPTERS: dict[type, dspy.Adapter] = {}


class StreamedCall:
    """One streamed program call: the call runs in its own task, :meth:`events` relays what it emits."""

    def __init__(
        self,
        program: Program,
        kwargs: dict[str, Any],
        rid: str,
        body: bytes,
        leased: tuple[VersionAsk, Lease] | None = None,
    ) -> None:
        # The version question, answered, and its lease (not entered); None: production's.
        self.ask, self.leasing = leased or (VersionAsk(), None)
        self.program = program
        self.kwargs = kwargs
        self.rid = rid
        self.body = body
        self.adapter = listener_adapter(program.adapter)
        self.listeners: list[StreamListener] = []
        self.by_predictor: dict[int, list[StreamListener]] = {}

    async def events(self) -> AsyncIterator[bytes]:
        send, receive = anyio.create_memory_object_stream[Any](BUFFER_CHUNKS)
        task = asyncio.create_task(self._call(send))
        task.add_done_callback(_retrieve)  # a failure nobody awaited (client gone) is not an error
        # Whatever way the request ends (client gone, server stopping), the call ends with it: the
        # client's request task is cancelled when the client disconnects, possibly while this
        # generator waits at a ``yield`` where the cancellation cannot reach it.
        consumer = asyncio.current_task()
        if consumer is not None:
            consumer.add_done_callback(lambda _: task.cancel())
        try:
            async with receive:
                async for chunk in receive:
                    # Every chunk already waiting goes out in one write: one ASGI message and one
                    # send() per batch instead of per 20-character chunk (never waits for more).
                    events = self._relay(chunk)
                    with contextlib.suppress(anyio.WouldBlock, anyio.EndOfStream):
                        while len(events) < BATCH_EVENTS:
                            events += self._relay(receive.receive_nowait())
                    if events:
                        yield b"".join(events)
            try:
                body = await task
            except CallFailed as failure:
                yield _error_event(failure)
            else:
                for listener in self.listeners:  # tokens a listener still holds back
                    with dspy.context(adapter=self.adapter):
                        rest = listener.finalize()
                    if rest is not None:
                        yield self._chunk(rest)
                yield b'event: final\ndata: {"type":"final","outputs":' + body + b"}\n\n"
            yield DONE
        finally:
            task.cancel()

    async def _call(self, send: MemoryObjectSendStream[Any]) -> bytes:
        """The program call, recorded like any other; CallFailed for every failure."""
        program = self.program
        current_ask.set(self.ask)  # this task's own context: the call reports the version it asked
        async with send:  # closing it ends the relay loop
            try:
                async with self.leasing or program.lease() as lease:
                    # Listen to the very instance the call runs on (with instance_mode pool or
                    # per_request, a copy of the program's).
                    self._listen_to(lease.instance)
                    with dspy.context(send_stream=send, stream_listeners=self.listeners):
                        result = await call_program(
                            program, self.kwargs, source="stream", request_id=self.rid, raw_inputs=self.body,
                            lease=lease,
                        )  # fmt: skip
            except InstancesBusy as busy:  # taken before the call: refused without a log row, as before
                raise classify(program, busy) from None
        return result.body

    def _listen_to(self, instance: dspy.Module) -> None:
        self.listeners = build_listeners(instance)
        for listener in self.listeners:
            self.by_predictor.setdefault(id(listener.predict), []).append(listener)

    def _relay(self, chunk: Any) -> list[bytes]:
        """The events for one LM stream chunk: what the listeners of its predictor let through."""
        listeners = self.by_predictor.get(getattr(chunk, "predict_id", None) or 0, ())
        events = []
        with dspy.context(adapter=self.adapter):  # listeners parse by the call's adapter
            for listener in listeners:
                response = listener.receive(chunk)
                if response is not None:
                    events.append(self._chunk(response))
        return events

    @staticmethod
    def _chunk(response: StreamResponse) -> bytes:
        return sse(
            "chunk",
            {
                "type": "chunk",
                "predictor": response.predict_name,
                "field": response.signature_field_name,
                "chunk": response.chunk,
                "last": response.is_last_chunk,
            },
        )


def _error_event(failure: CallFailed) -> bytes:
    return sse("error", {"type": "error", "status": failure.status, **failure.body()})


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One Server-Sent Event (compact JSON has no newline, so one ``data:`` line)."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n".encode()
