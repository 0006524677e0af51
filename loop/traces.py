"""Call traces: a captured call's LM calls as the call page shows them, bounded and without media bytes.

The request path only builds a :class:`TraceRecord` from ``RequestFinished.lm_traces`` (references
to what DSPy already built, and a size estimate for the writer's byte bound). Everything that
costs CPU happens in :func:`trace_row` on the writer thread: each string is cut to
``LOOP_TRACE_MAX_CHARS`` (the cut marked in the text and by ``"truncated": true`` on the call), a
``data:`` URI becomes a reference (media type, size, SHA-256 prefix, :mod:`telemetry.media_refs`),
values JSON cannot hold become their text.
"""

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from programs import events
from telemetry.media_refs import media_reference

DEPTH_MAX = 50  # deeper message structures are stored as their text
TRUNCATED = "…[truncated {n} characters]"


@dataclass(slots=True)
class TraceRecord:
    request_id: str
    program: str
    version: str
    lm_calls: tuple[dict[str, Any], ...]  # RequestFinished.lm_traces, raw
    finished_at: float
    size: int  # bytes the record holds, roughly (the writer's byte bound)


def trace_record(done: events.RequestFinished) -> TraceRecord:
    """The record of a finished captured call (on the request path: no copy, one pass for its size).

    At most ``LOOP_TRACE_MAX_LM_CALLS`` LM calls are kept, the first ones (an optimization's run
    makes thousands); the log row still counts them all."""
    lm_calls = done.lm_traces[: settings.LOOP_TRACE_MAX_LM_CALLS]
    size = 512 + sum(
        _rough_size(call.get("messages")) + _rough_size(call.get("completion")) for call in lm_calls
    )
    return TraceRecord(done.request_id, done.program, done.version, lm_calls, done.finished_at, size)


def trace_size(record: TraceRecord) -> int:
    return record.size


def _rough_size(value: Any) -> int:
    """Characters of the strings in ``value`` (messages are a few levels deep at most)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_rough_size(item) for item in value.values())
    if isinstance(value, list | tuple):
        return sum(_rough_size(item) for item in value)
    return 16


def trace_row(record: TraceRecord) -> dict[str, Any]:
    """The ``CallTrace`` row's values (on the writer thread)."""
    return {
        "request_id": record.request_id,
        "program": record.program,
        "version": record.version,
        "lm_calls": [trace_call(call) for call in record.lm_calls],
        "created_at": datetime.fromtimestamp(record.finished_at or 0, UTC),
    }


def trace_call(call: dict[str, Any]) -> dict[str, Any]:
    """One LM call as stored and served: messages, completion, usage, cost, latency, model."""
    cut = _Cut(settings.LOOP_TRACE_MAX_CHARS)
    entry = {
        "messages": cut.value(call.get("messages") or [], 0),
        "completion": cut.value(_completion(call.get("completion")), 0),
        "usage": {
            "prompt_tokens": call.get("prompt_tokens", 0),
            "completion_tokens": call.get("completion_tokens", 0),
            "total_tokens": call.get("total_tokens", 0),
        },
        "cost_usd": call.get("cost_usd"),
        "duration_ms": call.get("duration_ms"),
        "model": call.get("model", ""),
        "model_alias": call.get("model_alias", ""),
        "error": call.get("error"),
        "cache_hit": bool(call.get("cache_hit")),
        "truncated": cut.truncated,
    }
    return entry


def _completion(outputs: Any) -> Any:
    """DSPy's outputs of an LM call (a list: strings, or dicts with ``text`` and tool calls) as one
    completion, or a list when the call asked for several (``n > 1``)."""
    if not isinstance(outputs, list | tuple):
        return outputs
    texts = [output.get("text", output) if isinstance(output, dict) else output for output in outputs]
    return texts[0] if len(texts) == 1 else texts


class _Cut:
    """Bounds every string of a value to ``limit`` characters and remembers whether it cut one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.truncated = False

    def value(self, value: Any, depth: int) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool | int):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else str(value)
        if depth >= DEPTH_MAX:
            return self.text(str(value))
        if isinstance(value, dict):
            return {str(key): self.value(item, depth + 1) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(item, depth + 1) for item in value]
        return self.text(str(value))  # a pydantic object, a dspy type: its text

    def text(self, text: str) -> Any:
        reference = media_reference(text)
        if not isinstance(reference, str):
            return reference  # a data: URI's reference (a dict)
        text = (
            reference.encode("utf-8", "backslashreplace").decode("utf-8")
            if not reference.isascii()
            else reference
        )
        if len(text) <= self.limit:
            return text
        self.truncated = True
        return text[: self.limit] + TRUNCATED.format(n=len(text) - self.limit)
