"""The one way a program is called, whatever the front door.

The plain route, gateway routes, batch items, streams, MCP tools and cron jobs each turn their
input into ``forward()`` keyword arguments and hand them to :func:`call_program`. Everything in
between is here: the request id bound for the whole call, admission, the DSPy context, the timeout
and the error mapping (:func:`programs.execution.run_program`), and the ``request_started`` /
``request_finished`` events. Telemetry (the inference log, counters, Prometheus) and the API key
attribution subscribe to those events (:mod:`programs.events`), so a new door gets them for free
and the serving core imports neither.
"""

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import dspy
from pydantic_core import to_json

from programs import events
from programs.capture import capture_traces
from programs.context import current_request_id, new_request_id
from programs.execution import CallFailed, run_program
from programs.instances import Lease
from programs.lm_gates import current_lm_gate
from programs.program import Program, VersionAsk, current_ask
from programs.runtime import get_runtime
from programs.usage import RequestUsage

# Answers given without running the program (at capacity, draining): no duration, so an overload
# does not show as a fast p50.
REFUSED_STATUSES = frozenset({429, 503})


@dataclass(slots=True)
class CallResult:
    body: bytes  # the JSON object the plain route answers
    request_id: str
    version: str = ""  # the program version that answered ("": the program has no versions)

    @property
    def output(self) -> dict[str, Any]:
        """The outputs as a dict (dspy-cli's ``PipelineOutput``), for doors that transform them."""
        return json.loads(self.body)


class ProgramCall:
    """One call in progress: its id, usage tracker and outcome, reported when it ends."""

    __slots__ = ("ask", "entry", "error_detail", "error_type", "inputs", "outputs", "program", "ran",
                 "request_id", "source", "status_code", "usage")  # fmt: skip

    def __init__(
        self, program: Program, request_id: str, source: str, entry: str, inputs: bytes | None
    ) -> None:
        self.program = program
        self.request_id = request_id
        self.source = source
        self.entry = entry
        self.inputs = inputs
        self.usage = RequestUsage()
        self.usage.capture = capture_traces(program.name)
        self.outputs: bytes | None = None
        self.status_code = 500
        self.error_type = ""
        self.error_detail: Any = ""
        self.ran = True  # False: refused before the program ran (report_rejected), not timed
        self.ask: VersionAsk | None = None  # the version question, answered by the lease

    def succeeded(self, body: bytes) -> None:
        self.status_code = 200
        self.outputs = body

    def failed(self, status_code: int, error_type: str, detail: Any) -> None:
        self.status_code = status_code
        self.error_type = error_type
        self.error_detail = detail

    def finished(self, duration_ms: float) -> events.RequestFinished:
        usage = self.usage.snapshot()
        program = self.program
        return events.RequestFinished(
            program=program.name,
            request_id=self.request_id,
            status_code=self.status_code,
            duration_ms=duration_ms if self.ran and self.status_code not in REFUSED_STATUSES else None,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=usage.cost_usd,
            lm_calls=usage.lm_calls,
            source=self.source,
            entry=self.entry,
            model_alias=program.model_alias,
            model=program.lm.model,
            inputs=self.inputs,
            outputs=self.outputs,
            error_type=self.error_type,
            error_detail=self.error_detail,
            finished_at=time.time(),
            answered_by=usage.answered_by,
            attempts=usage.attempts,
            version=self.ask.version if self.ask is not None else "",
            shadow=self.ask.shadow if self.ask is not None else False,
            lm_traces=self.usage.traces() if self.usage.capture else (),
        )


@contextlib.contextmanager
def reported_call(
    program: Program, *, source: str, entry: str = "", request_id: str | None = None, inputs: bytes | None
) -> Iterator[ProgramCall]:
    """Bind a call's request id and report it as started and, whatever happens, finished.

    A cancelled call (client gone, server stopping) finishes as 499 with the tokens spent so far;
    an exception the door did not expect, as 500. Doors do not use it directly: they call
    :func:`call_program`, which runs the program inside it, or :func:`report_rejected`.
    """
    call = ProgramCall(program, request_id or new_request_id(), source, entry, inputs)
    scope = current_request_id.set(call.request_id)
    started = time.perf_counter()
    if events.request_started:
        events.request_started.emit(events.RequestStarted(program.name, call.request_id, source, entry))
    try:
        yield call
    except CallFailed:
        raise  # its status is already on the call
    except asyncio.CancelledError as exc:
        call.failed(499, type(exc).__name__, str(exc) or "client disconnected")
        raise
    except Exception as exc:
        call.failed(500, type(exc).__name__, str(exc) or type(exc).__name__)
        raise
    finally:
        try:
            if events.request_finished:
                events.request_finished.emit(call.finished((time.perf_counter() - started) * 1000))
        finally:
            with contextlib.suppress(ValueError):  # exited in another context: nothing to undo there
                current_request_id.reset(scope)


def report_rejected(
    program: Program,
    *,
    status: int,
    error_type: str,
    detail: Any,
    inputs: bytes | None,
    source: str,
    entry: str = "",
    request_id: str | None = None,
) -> str:
    """Report a call refused before ``program`` ran, for its input (400 malformed, 413 too large,
    422 invalid) or anything else a door checks first (a 401 without a key...).

    The refusal is a call like any other for whoever listens (``request_started`` and
    ``request_finished``: the log row, counters, traces), with ``inputs`` as received (``None``:
    not read) and the door's error ``detail``; untimed. Every door reports its refused inputs
    here. Returns the call's request id.
    """
    with reported_call(program, source=source, entry=entry, request_id=request_id, inputs=inputs) as call:
        call.ran = False
        call.failed(status, error_type, detail)
    return call.request_id


async def call_program(
    program: Program,
    kwargs: dict[str, Any],
    *,
    source: str,
    entry: str = "",
    request_id: str | None = None,
    raw_inputs: bytes | None = None,
    lease: Lease | None = None,
    version: str | None = None,
    headers: Mapping[str, str] | None = None,
    shadow: bool = False,
) -> CallResult:
    """Run ``program`` on ``kwargs`` and return its JSON outputs, or raise :class:`CallFailed`.

    ``source`` names the kind of door (``http``, ``gateway``, ``batch``, ``stream``, ``mcp``,
    ``cron``) and ``entry`` which one (a gateway class, a job, a tool); both are on the log row.
    ``raw_inputs`` is what the log stores as the inputs (the request body), by default the
    keyword arguments as JSON. ``lease``: the instance to run on, when the door took it itself
    (a stream listens to it); else the call leases one. ``version``: the program version the
    caller asked for (a number such as ``v3`` or an alias name; None: the door's default,
    ``production``), resolved in the lease; ``headers``: the request's (a split sticky by a
    header reads them); ``shadow``: this call is a shadow run of ``version``. A door that leased
    itself bound its question first (``current_ask``, as ``/stream`` does). The
    :class:`CallFailed` carries the call's request id and the version that answered, as the
    :class:`CallResult` does.
    """
    inputs = raw_inputs if raw_inputs is not None else to_json(kwargs, fallback=str)
    bound = current_ask.get() if lease is not None else None
    ask = bound or VersionAsk(version, headers, shadow)
    scope = current_ask.set(ask) if bound is None else None
    try:
        with reported_call(program, source=source, entry=entry, request_id=request_id, inputs=inputs) as call:
            call.ask = ask
            try:
                body = await run_program(get_runtime(), program, kwargs, call.usage, lease)
            except CallFailed as failure:
                call.failed(failure.status, failure.error_type, failure.logged_detail)
                failure.request_id = call.request_id
                failure.version = ask.version
                raise
            call.succeeded(body)
    finally:
        if scope is not None:
            current_ask.reset(scope)
    if ask.shadow_version:
        _shadow(program, kwargs, source, entry, ask.shadow_version, inputs)
    return CallResult(body, call.request_id, ask.version)


# Shadow runs in flight (a task only weakly referenced by the loop could be collected mid-run).
_shadows: set[asyncio.Task[Any]] = set()


def _shadow(
    program: Program, kwargs: dict[str, Any], source: str, entry: str, version: str, inputs: bytes
) -> None:
    """Run the call again on ``version``, off the answer's path: a task of its own, logged as its
    own call (``shadow: true``, its own request id and cost), its outcome never seen by the caller."""

    async def run() -> None:
        # Not the caller's: no stream to write to, no quota reservation to charge (it has ended).
        current_lm_gate.set(None)
        with contextlib.suppress(CallFailed), dspy.context(send_stream=None, stream_listeners=[]):
            await call_program(
                program, kwargs, source=source, entry=entry, raw_inputs=inputs, version=version, shadow=True
            )

    task = asyncio.get_running_loop().create_task(run())
    _shadows.add(task)
    task.add_done_callback(_shadows.discard)
