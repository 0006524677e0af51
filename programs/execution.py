"""Run one program call: its LM and adapter in a ``dspy.context``, natively or in the sync pool.

Everything a failure can be is turned into a :class:`CallFailed` carrying the HTTP status and
the JSON body the client gets: 504 for timeouts, 502 for the upstream LLM, 500 for the program.
"""

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import dspy
from asgiref.sync import sync_to_async
from dspy.utils.exceptions import AdapterParseError, LMError, LMTimeoutError
from dspy.utils.usage_tracker import UsageTracker

from programs.dspy_speedups import inline_lm_steps
from programs.outputs import OutputMismatch, to_response_body
from programs.runtime import Program, Runtime

logger = logging.getLogger(__name__)


@dataclass
class CallFailed(Exception):
    status: int
    detail: str
    error_type: str
    upstream_status: int | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"detail": self.detail, "error_type": self.error_type}
        if self.upstream_status is not None:
            body["upstream_status"] = self.upstream_status
        return body


async def run_program(
    runtime: Runtime, program: Program, kwargs: dict[str, Any], usage: UsageTracker
) -> bytes:
    """Call the program and return the JSON response body, or raise :class:`CallFailed`.

    ``usage`` collects this call's token usage per LM call, whether the call succeeds or not: it
    lives in this request's context, so concurrent requests never see each other's numbers.
    """
    inline = inline_lm_steps.set(program.static_credentials)
    try:
        with dspy.context(
            lm=program.lm, adapter=program.adapter, trace=None, track_usage=True, usage_tracker=usage
        ):
            async with asyncio.timeout(program.timeout_s):
                if program.is_async:
                    result = await program.instance.acall(**kwargs)
                else:
                    # Contextvars (the dspy.context above included) are copied into the worker thread.
                    call = sync_to_async(program.instance, thread_sensitive=False, executor=runtime.executor)
                    result = await call(**kwargs)
        return to_response_body(result, program.outputs)
    except Exception as exc:
        raise classify(program, exc) from exc
    finally:
        inline_lm_steps.reset(inline)


def classify(program: Program, exc: BaseException) -> CallFailed:
    name = type(exc).__name__
    if isinstance(exc, TimeoutError | LMTimeoutError):
        return CallFailed(504, f"{program.name} did not finish within {program.timeout_s:g} s", "Timeout")
    if isinstance(exc, LMError):
        status = getattr(exc, "status", None)
        message = getattr(exc, "message", "") or str(exc)
        return CallFailed(502, f"Upstream LLM error from {program.model_alias}: {message}", name, status)
    if isinstance(exc, AdapterParseError):
        return CallFailed(502, f"The LLM's answer could not be parsed into {program.name}'s outputs", name)
    if isinstance(exc, OutputMismatch):
        return CallFailed(500, f"{program.name} returned outputs that do not match its type: {exc}", name)
    logger.error("Program %s failed", program.name, exc_info=exc)
    return CallFailed(500, f"{program.name} failed: {name}: {exc}", name)
