"""The in-memory record of one finished request, and its conversion to a database row.

A record is built on the request path from what is already at hand (raw body bytes, the usage
snapshot, a few numbers); everything that costs CPU (JSON parsing, datetimes, truncation, media
references) happens in :func:`to_log_values`, on the writer's thread.
"""

import json
import math
import os
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from programs.usage import EMPTY_USAGE, UsageSnapshot
from telemetry.media_refs import media_reference

ERROR_MESSAGE_MAX = 4000
TEXT_BODY_MAX = 10_000
# Deeper captured JSON is stored as its text (``_unparsed``): the stored value is cleaned and later
# encoded for the database by recursive code, which a body nested 10,000 deep would take past
# Python's recursion limit (1,000). No real inputs nest this deep.
STORED_DEPTH_MAX = 100
_SURROGATE = re.compile("[\ud800-\udfff]")


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:100]


WORKER = _worker_name()


def _after_fork() -> None:
    global WORKER
    WORKER = _worker_name()


os.register_at_fork(after_in_child=_after_fork)


@dataclass(slots=True)
class Body:
    """A captured request/response body: raw bytes, or only its size when over the capture limit."""

    raw: bytes | None
    size: int


@dataclass(slots=True)
class InferenceRecord:
    program: str
    model_alias: str
    model: str
    request_id: str
    status_code: int
    finished_at: float  # time.time() when the response was ready
    duration_ms: float | None  # None: refused before the program ran
    usage: UsageSnapshot = EMPTY_USAGE
    error_type: str = ""
    error_detail: Any = ""  # a string, or the validation errors list (serialised by the writer)
    inputs: Body | None = None  # None: capture is off for this program
    outputs: Body | None = None
    worker: str = ""
    api_key_id: int | None = None  # who called (apikeys.context); None with auth off
    api_key_name: str = ""
    source: str = "http"  # the front door: http, gateway, batch, stream, mcp, cron
    entry: str = ""  # which one: a gateway class, a job, a tool
    trace_id: str | None = None  # the OpenTelemetry trace (telemetry.tracing); None when not traced
    version: str = ""  # the program version that ran the call ("": unversioned)
    shadow: bool = False  # a shadow run (a sampled copy of a call, off the answer's path)

    @property
    def success(self) -> bool:
        return 200 <= self.status_code < 400


def to_log_values(record: InferenceRecord) -> dict[str, Any]:
    """The ``InferenceLog`` field values of a record (every field but the id).

    Never raises for what a client sent: a body that is not JSON, or nests too deep to store, is
    stored as an ``_unparsed`` marker, so a bad body gets its row and never costs its batch a retry.
    """
    usage = record.usage
    return dict(
        program=record.program[:200],
        model_alias=record.model_alias[:100],
        model=record.model[:200],
        request_id=record.request_id[:128],
        worker=record.worker[:100],
        api_key_id=record.api_key_id,
        api_key_name=record.api_key_name[:140],
        source=record.source[:20],
        entry=record.entry[:200],
        trace_id=record.trace_id,
        inputs=_body_json(record.inputs),
        outputs=_body_json(record.outputs),
        success=record.success,
        status_code=record.status_code,
        error_type=record.error_type[:200],
        error_message=_error_text(record.error_detail),
        duration_ms=None if record.duration_ms is None else round(record.duration_ms, 3),
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        cost_usd=usage.cost_usd,
        lm_calls=list(usage.lm_calls),
        answered_by=usage.answered_by[:100],
        attempts=usage.attempts,
        version=record.version[:20],
        shadow=record.shadow,
        created_at=datetime.fromtimestamp(record.finished_at, tz=UTC),
    )


class _TooDeep(ValueError):
    pass


def _body_json(body: Body | None) -> Any:
    if body is None or body.raw is None:
        return _unparsed(body)
    try:
        return _storable(json.loads(body.raw), 0)
    except (ValueError, UnicodeDecodeError, RecursionError):  # not JSON, or nested too deep
        return _unparsed(body)


def _unparsed(body: Body | None) -> Any:
    """What is stored of a body that is not stored as JSON: its (truncated) text, or its size."""
    if body is None:
        return None
    if body.raw is None:
        return {"_truncated": True, "bytes": body.size}
    return {"_unparsed": _text(body.raw[:TEXT_BODY_MAX].decode("utf-8", "replace"))}


def _storable(value: Any, depth: int) -> Any:
    """JSON columns reject NaN/Infinity (PostgreSQL); Python's json accepts them: make them strings.
    A ``data:`` URI is stored as a reference to its content, not its bytes. Past
    ``STORED_DEPTH_MAX`` levels: :class:`_TooDeep`."""
    if isinstance(value, str):
        return media_reference(_text(value))
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if depth >= STORED_DEPTH_MAX and isinstance(value, dict | list):
        raise _TooDeep(f"nested over {STORED_DEPTH_MAX} levels")
    if isinstance(value, dict):
        return {_text(key): _storable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item, depth + 1) for item in value]
    return value


def _text(text: str) -> str:
    """``text`` without lone surrogates (``"\\ud800"`` in JSON), which PostgreSQL's ``jsonb`` rejects:
    each becomes its escape, as text."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _error_text(detail: Any) -> str:
    if isinstance(detail, str):
        return _text(detail[:ERROR_MESSAGE_MAX])
    try:
        text = json.dumps(detail, default=str)
    except (TypeError, ValueError, RecursionError):
        text = repr(detail)
    return _text(text[:ERROR_MESSAGE_MAX])
