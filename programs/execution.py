"""Run one program call: its LM and adapter in a ``dspy.context``, natively or in the sync pool.

Everything a failure can be is turned into a :class:`CallFailed` carrying the HTTP status and
the JSON body the client gets: 504 for timeouts, 502 for the upstream LLM, 500 for the program;
503 + ``Retry-After`` when the provider rate-limits past the retries or the model's circuit is
open, 429 + ``Retry-After`` when the model's rpm/tpm budget is spent (programs/upstream.py).
"""

import asyncio
import contextlib
import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import dspy
from asgiref.sync import sync_to_async
from django.http import JsonResponse
from dspy.dsp.utils.settings import thread_local_overrides
from dspy.utils.exceptions import AdapterParseError, LMError, LMRateLimitError, LMTimeoutError
from dspy.utils.usage_tracker import UsageTracker

from programs.dspy_speedups import inline_lm_steps
from programs.instances import InstancesBusy, Lease
from programs.limits import Limiter
from programs.lm_gates import LMCallRefused
from programs.outputs import OutputMismatch, to_response_body
from programs.program import Program, UnknownVersion
from programs.runtime import Runtime
from programs.upstream import CircuitOpen, LimitsUnavailable, ModelBudgetExceeded

logger = logging.getLogger(__name__)


# Seconds a refused client is asked to wait before retrying (429 and 503).
RETRY_AFTER_S = 1


@dataclass
class CallFailed(Exception):
    status: int
    detail: str  # what the client is told
    error_type: str
    program: str
    upstream_status: int | None = None
    retry_after: int | None = None
    request_id: str = ""  # set by programs.calls for the door's answer
    version: str = ""  # the program version that answered (programs.calls), for X-Program-Version
    # The provider's own text: kept in the log row, never sent to the client (it may quote the
    # prompt, the provider's internals, or an error page).
    upstream_message: str = ""

    @property
    def logged_detail(self) -> str:
        """The log row's error message: the client's ``detail`` and the provider's own text."""
        return f"{self.detail}: {self.upstream_message}" if self.upstream_message else self.detail

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"detail": self.detail, "error_type": self.error_type, "program": self.program}
        if self.upstream_status is not None:
            body["upstream_status"] = self.upstream_status
        return body

    def response(self) -> JsonResponse:
        response = JsonResponse(self.body(), status=self.status)
        if self.retry_after is not None:
            response["Retry-After"] = str(self.retry_after)
        return response


async def run_program(
    runtime: Runtime,
    program: Program,
    kwargs: dict[str, Any],
    usage: UsageTracker,
    lease: Lease | None = None,
) -> bytes:
    """Call the program and return the JSON response body, or raise :class:`CallFailed`.

    ``usage`` collects this call's token usage per LM call, whether the call succeeds or not: it
    lives in this request's context, so concurrent requests never see each other's numbers.
    The call runs on the instance ``lease`` holds (a stream takes it first, to listen to it), else
    on one it leases itself.
    """
    if runtime.draining:
        detail = "The server is shutting down; retry on another instance"
        raise CallFailed(503, detail, "Draining", program.name, retry_after=RETRY_AFTER_S)
    if not await program.limiter.try_acquire():
        raise _refused(program, program.limiter)
    inline = inline_lm_steps.set(program.static_credentials)
    usage.deadline = time.monotonic() + program.timeout_s  # retries never wait past it
    try:
        settings = call_settings(program, usage)
        leasing = program.lease() if lease is None else contextlib.nullcontext(lease)
        with dspy.context(**settings):
            async with asyncio.timeout(program.timeout_s), leasing as leased:
                if program.is_async:
                    result = await leased.instance.acall(**kwargs)
                else:
                    streamed = settings["send_stream"] is not None
                    result = await _call_in_pool(runtime, program, leased, kwargs, streamed=streamed)
        return to_response_body(result, program.outputs)
    except CallFailed:
        raise
    except Exception as exc:
        raise classify(program, exc) from exc
    finally:
        inline_lm_steps.reset(inline)
        program.limiter.release()


def call_settings(program: Program, usage: UsageTracker) -> dict[str, Any]:
    """Every DSPy setting of one call, so that nothing on the call reads the global configuration.

    The program's settings were fixed at start-up (its LM and adapter, no trace, DSPy's other
    settings as start-up left them). Per call: this request's usage tracker, a list of callbacks
    of its own (code that appends to ``dspy.settings.callbacks`` during a call changes that call
    only), and the streaming settings of the caller's own ``dspy.context`` (programs.streaming).
    """
    caller = thread_local_overrides.get()
    return {
        **program.dspy_settings,
        "callbacks": list(program.dspy_settings.get("callbacks") or ()),
        "usage_tracker": usage,
        "send_stream": caller.get("send_stream"),
        "stream_listeners": caller.get("stream_listeners") or [],
    }


async def _call_in_pool(
    runtime: Runtime, program: Program, lease: Lease, kwargs: dict[str, Any], *, streamed: bool
) -> Any:
    """Run a sync program on a worker thread, if one is free (or frees up within the bound).

    The pool slot is given back when the thread finishes, not when the request ends: a timed-out
    call keeps its thread until the LM call returns, and must keep counting until then. So does
    its instance (the lease gives both back when the thread is done).

    A streamed call runs on one of AnyIO's worker threads instead of the service's executor (its
    slot is still one of the pool's): DSPy sends a sync call's stream chunks to the event loop
    with ``anyio.from_thread.run()``, which finds the loop only from AnyIO's own worker threads.
    """
    pool = runtime.pool_limiter
    if not await pool.try_acquire():
        raise _refused(program, pool)
    loop = asyncio.get_running_loop()

    def free_slot() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed at shutdown
            loop.call_soon_threadsafe(pool.release)

    # Contextvars (the dspy.context of the caller included) are copied into the worker thread.
    async with lease.in_thread(free_slot) as call:
        if streamed:
            run = functools.partial(call, **kwargs)
            return await anyio.to_thread.run_sync(run, abandon_on_cancel=True, limiter=runtime.stream_threads)
        return await sync_to_async(call, thread_sensitive=False, executor=runtime.executor)(**kwargs)


def _refused(program: Program, limiter: Limiter) -> CallFailed:
    detail = f"{program.name} is at capacity: all {limiter.limit} {limiter.name} slots are busy; retry later"
    return CallFailed(429, detail, "ConcurrencyLimit", program.name, retry_after=RETRY_AFTER_S)


def classify(program: Program, exc: BaseException) -> CallFailed:
    if isinstance(exc, UnknownVersion):
        return CallFailed(404, str(exc), "UnknownVersion", program.name)
    if isinstance(exc, InstancesBusy):
        detail = f"{program.name} is at capacity: every instance of its pool is still busy; retry later"
        return CallFailed(429, detail, "ConcurrencyLimit", program.name, retry_after=RETRY_AFTER_S)
    if isinstance(
        exc, CircuitOpen | ModelBudgetExceeded | LimitsUnavailable | LMRateLimitError | LMCallRefused
    ):
        return _try_later(program, exc)
    name, status, message = type(exc).__name__, None, ""
    if isinstance(exc, TimeoutError | LMTimeoutError):
        code, name, detail = 504, "Timeout", f"{program.name} did not finish within {program.timeout_s:g} s"
    elif isinstance(exc, LMError):
        status = getattr(exc, "status", None)
        message = getattr(exc, "message", "") or str(exc)
        answered = f"HTTP {status}" if status is not None else "no HTTP response"
        code, detail = 502, f"Upstream LLM error from {program.model_alias}: {answered} ({name})"
    elif isinstance(exc, AdapterParseError):
        code, detail = 502, f"The LLM's answer could not be parsed into {program.name}'s outputs"
    elif isinstance(exc, OutputMismatch):
        code, detail = 500, f"{program.name} returned outputs that do not match its type: {exc}"
    else:
        logger.error("Program %s failed", program.name, exc_info=exc)
        code, detail = 500, f"{program.name} failed: {name}: {exc}"
    return CallFailed(code, detail, name, program.name, upstream_status=status, upstream_message=message)


def _try_later(program: Program, exc: LMError) -> CallFailed:
    """Capacity, not a fault: the model's budget (429), its open circuit or the provider's own
    rate limit after the retries (503), each with the ``Retry-After`` the limit gave."""
    retry_after = max(1, math.ceil(exc.retry_after or RETRY_AFTER_S))
    if isinstance(exc, LMCallRefused):  # the caller's own quota, as the door's quota refusal answers
        return CallFailed(
            exc.status or 429, exc.message, "quota_exceeded", program.name, retry_after=retry_after
        )
    if isinstance(exc, ModelBudgetExceeded):
        return CallFailed(429, exc.message, "ModelBudget", program.name, retry_after=retry_after)
    if isinstance(exc, CircuitOpen | LimitsUnavailable):
        return CallFailed(503, exc.message, type(exc).__name__, program.name, retry_after=retry_after)
    detail = f"The upstream LLM ({exc.model or program.model_alias}) is rate-limiting us; retry later"
    failed = CallFailed(503, detail, "UpstreamRateLimited", program.name, upstream_status=429)
    failed.retry_after = retry_after
    return failed
