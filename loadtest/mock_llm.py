"""A fast, OpenAI-compatible mock LLM server for tests and load tests.

Why it exists: the project serves DSPy programs over HTTP, and exercising that stack against a paid LLM is
slow, costly and non-deterministic. This server speaks the real OpenAI chat-completions wire format (JSON and
SSE streaming, ``usage`` blocks, OpenAI error bodies), so the unmodified DSPy/LM client stack talks to it
exactly as it would to OpenAI, while answers are instant, deterministic and free.

Answers are shaped for DSPy: the output fields requested in the system message ("Your output fields are:
1. `answer` (str): ...") are answered in ChatAdapter format (``[[ ## answer ## ]]`` sections ending with
``[[ ## completed ## ]]``), or as a JSON object when ``response_format`` asks for JSON (JSONAdapter). Every
value echoes the first input field of the last user message (``Echo: <value>``) so a test can tell which
request an answer belongs to; non-string fields get a valid value of their type (see ``_value_for``).
Multimodal content (a list of parts) is read by its text parts; an ``image_url`` part reads as
``[image_url <url>]`` (``[image_url image/png N bytes sha256 <16 hex>]`` for a base64 ``data:`` URI) and an
``input_audio`` part as ``[input_audio <format> N bytes sha256 <16 hex>]``, so an image field echoes what
reached the model; ``GET /requests`` returns the request bodies themselves.

Markers anywhere in the last user message steer a single request:

* ``[usage=P,C]``  report ``prompt_tokens=P`` and ``completion_tokens=C`` instead of the char-based estimate;
* ``[delay=MS]``   answer after MS milliseconds instead of ``MOCK_DELAY_MS`` (also read from the system
  message, when the last user message has none: a program version whose instructions carry it is slow);
* ``[gather=N]``   hold the request until N requests carrying ``[gather=N]`` are in flight together (then
  all of them go on), or until ``MOCK_GATHER_TIMEOUT_S`` passes: a test of concurrency waits for the event
  itself instead of hoping a delay is long enough;
* ``[fault=NAME]`` inject fault NAME (one of ``FAULTS``), or ``[fault=none]`` to opt out of a global fault:
  ``500``, ``429`` (with ``Retry-After``), ``stall`` (no answer until ``MOCK_STALL_S``), ``malformed`` (text
  that is not in the requested format), ``badjson`` (a body that is not JSON), ``drop`` (the connection
  closes before any byte), ``cut`` (a 200 whose body or event stream stops half-way).

Fault scripts, switched at runtime (``POST /faults``), steer every request to one model (the body's
``model``, or ``"*"`` for any model) without a marker: ``{"model": "m", "sequence": ["429", "429"],
"then": null, "retry_after": 0.5}`` answers the next two requests 429 (``Retry-After: 0.5``), then
normally; ``{"sequence": [], "then": "500"}`` fails every request until ``DELETE /faults`` (or
another script for that model). A marker still wins. ``GET /stats/models`` counts requests per
model; ``GET /stats/tokens`` the tokens billed per model (every answer's ``usage``, as a provider
bills them).

Environment: ``MOCK_HOST``/``MOCK_PORT`` (CLI defaults), ``MOCK_DELAY_MS`` (default 0), ``MOCK_FAULT`` with
``MOCK_ERROR_RATE`` (probability of the global fault, default 1.0), ``MOCK_STALL_S`` (default 300).

Usage: ``python loadtest/mock_llm.py [--host 127.0.0.1] [--port 8900]`` (``--port 0`` picks a free port).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import binascii
import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import os
import random
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

MODEL_ID = "mock-model"
FAULTS = frozenset({"500", "429", "stall", "malformed", "drop", "badjson", "cut"})
NO_FAULT = "none"
MALFORMED_CONTENT = "I refuse to follow the format."
BADJSON_BODY = b'{"id": "chatcmpl-mock", "choices": [ <this is not JSON'
SERVER_ERROR_BODY = {"error": {"message": "mock upstream failure", "type": "server_error", "code": None}}
RATE_LIMIT_BODY = {
    "error": {
        "message": f"Rate limit reached for {MODEL_ID} (mock). Please try again in 1s.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8900
HISTORY_SIZE = 256
STREAM_CHUNK_CHARS = 20
MIN_STREAM_CHUNKS = 3
#: How often a stalled request checks whether its client is still there (matters only when the embedding
#: runner does not cancel handlers on disconnect, i.e. ``handler_cancellation=False``, aiohttp's default).
STALL_POLL_S = 0.25

# Precompiled once: the handler must sustain thousands of requests per second on one core.
_MARKER_RE = re.compile(r"\[(usage|delay|fault|gather)=([^\]\s]*)\]")
_HEADER_RE = re.compile(r"^\[\[ ## (\w+) ## \]\]", re.MULTILINE)
_OUTPUT_FIELD_RE = re.compile(r"^\d+\. `(\w+)` \(", re.MULTILINE)
_TYPE_TOKEN_RE = re.compile(
    r"""\s*(?:(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
    r"""|(?P<num>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_][\w.]*)|(?P<punct>[\[\],]))"""
)
_OUTPUT_FIELDS_INTRO = "Your output fields are:\n"
_STRUCTURE_INTRO = "\nAll interactions will be structured"
_SCHEMA_HINT = "{%s}        # note: the value you produce must adhere to the JSON schema: "
_ENUM_HINT = "{%s}        # note: the value you produce must be one of: "
_OUTPUT_REQUIREMENTS = "\n\nRespond with "
_JSON_ADAPTER_INTRO = "\nOutputs will be a JSON object with the following fields."

Schema = dict[str, Any]
OutputFields = tuple[tuple[str, Schema], ...]

_SIMPLE_TYPES: dict[str, Schema] = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "NoneType": {"type": "null"},
    "None": {"type": "null"},
}
_ARRAY_TYPES = frozenset({"list", "List", "set", "Set", "frozenset", "FrozenSet", "Sequence", "Iterable"})
_MAPPING_TYPES = frozenset({"dict", "Dict", "Mapping", "MutableMapping"})
_LITERAL_NAMES = {"True": True, "False": False, "None": None}


@dataclass(frozen=True, slots=True)
class MockConfig:
    """Server-wide behaviour, read once at start-up so the hot path never touches ``os.environ``."""

    delay_ms: float = 0.0
    fault: str | None = None
    error_rate: float = 1.0
    stall_s: float = 300.0
    gather_timeout_s: float = 30.0
    history_size: int = HISTORY_SIZE

    def __post_init__(self) -> None:
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; expected one of {sorted(FAULTS)}")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error rate must be within 0..1, got {self.error_rate}")

    @classmethod
    def from_env(cls) -> MockConfig:
        """Build the config from ``MOCK_*`` variables, so subprocess-based tests can steer the server."""
        return cls(
            delay_ms=float(os.environ.get("MOCK_DELAY_MS") or 0),
            fault=os.environ.get("MOCK_FAULT") or None,
            error_rate=float(os.environ.get("MOCK_ERROR_RATE") or 1.0),
            stall_s=float(os.environ.get("MOCK_STALL_S") or 300),
            gather_timeout_s=float(os.environ.get("MOCK_GATHER_TIMEOUT_S") or 30),
        )


@dataclass(slots=True)
class Stats:
    """Counters behind ``GET /stats``; load tests read them to check concurrency and fault handling."""

    completions: int = 0  # well-formed answers served with 200 (streams counted once fully sent)
    in_flight: int = 0  # chat requests currently inside the handler
    peak_in_flight: int = 0
    requests: int = 0  # chat requests received (including faulted and invalid ones)
    faults: int = 0  # chat requests that had a fault injected

    def reset(self) -> None:
        """Zero the counters in place (handlers in flight still decrement this object); peak restarts at the
        current in-flight count."""
        self.completions = self.requests = self.faults = 0
        self.peak_in_flight = self.in_flight


@dataclass(frozen=True, slots=True)
class Markers:
    """Per-request overrides parsed from ``[usage=P,C]``, ``[delay=MS]`` and ``[fault=NAME]``."""

    usage: tuple[int, int] | None = None
    delay_ms: float | None = None
    fault: str | None = None
    gather: int | None = None


@dataclass(slots=True)
class FaultScript:
    """``POST /faults``: the faults of a model's next requests in order, then ``then`` for every
    later one (None: answer normally). The lock-free deque is safe: handlers run on one loop."""

    sequence: deque[str]
    then: str | None
    retry_after: str

    @classmethod
    def parse(cls, body: Any) -> tuple[str, FaultScript]:
        if not isinstance(body, dict):
            raise BadRequest("a fault script is a JSON object")
        model, sequence, then = body.get("model", "*"), body.get("sequence", []), body.get("then")
        if not isinstance(model, str) or not isinstance(sequence, list):
            raise BadRequest("model must be a string and sequence a list of fault names")
        for fault in [*sequence, *([then] if then is not None else [])]:
            if fault != NO_FAULT and fault not in FAULTS:
                raise BadRequest(f"unknown fault {fault!r}; expected one of {sorted(FAULTS)} or 'none'")
        retry_after = body.get("retry_after", 1)
        if isinstance(retry_after, bool) or not isinstance(retry_after, int | float) or retry_after < 0:
            raise BadRequest("retry_after must be a non-negative number of seconds")
        return model, cls(deque(sequence), then, f"{retry_after:g}")

    def next_fault(self) -> str | None:
        fault = self.sequence.popleft() if self.sequence else self.then
        return None if fault == NO_FAULT else fault


@dataclass(slots=True)
class Gathering:
    """A ``[gather=N]`` group: how many have arrived, set once all N have (handlers share one loop)."""

    arrived: int = 0
    full: asyncio.Event = field(default_factory=asyncio.Event)


class BadRequest(ValueError):
    """A request the mock refuses with an OpenAI-style 400, so test mistakes surface loudly."""


# ----------------------------------------------------------------------------------------------------------
# Prompt parsing
# ----------------------------------------------------------------------------------------------------------


def _text(content: Any) -> str:
    """Flatten an OpenAI message ``content`` (a string or a list of typed parts) to its text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_part_text(part) for part in content if isinstance(part, dict))
    return ""


def _part_text(part: dict[str, Any]) -> str:
    """A text part's text; an image or audio part as a bracketed line naming what arrived (echoed)."""
    if isinstance(part.get("text"), str):
        return part["text"]
    kind = part.get("type")
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str):
            return "[image_url ?]"
        header, comma, payload = url.partition(",")
        if url.startswith("data:") and comma and header.endswith(";base64"):
            return f"[image_url {header[5:-7]} {_digest(payload)}]"
        return f"[image_url {url}]"
    if kind == "input_audio":
        audio = part.get("input_audio")
        audio = audio if isinstance(audio, dict) else {}
        data = audio.get("data")
        return f"[input_audio {audio.get('format')} {_digest(data if isinstance(data, str) else '')}]"
    return ""


def _digest(payload: str) -> str:
    """``N bytes sha256 <16 hex>`` of base64 content, so a test can tell the exact bytes reached the model."""
    try:
        content = binascii.a2b_base64(payload)
    except binascii.Error:
        return "(not base64)"
    return f"{len(content)} bytes sha256 {hashlib.sha256(content).hexdigest()[:16]}"


def _scan_messages(messages: list[Any]) -> tuple[str, str, int]:
    """Return (first system message, last user message, total content characters) in one pass."""
    system = ""
    last_user = ""
    chars = 0
    for message in messages:
        if not isinstance(message, dict):
            raise BadRequest("each message must be an object")
        text = _text(message.get("content"))
        chars += len(text)
        role = message.get("role")
        if role == "user":
            last_user = text
        elif role in ("system", "developer") and not system:
            system = text
    return system, last_user, chars


def _system_delay(system: str) -> float | None:
    """A ``[delay=MS]`` in the system message (a program's instructions), else None."""
    match = re.search(r"\[delay=([0-9.]+)\]", system)
    return float(match.group(1)) if match else None


def _parse_markers(text: str) -> Markers:
    """Read the steering markers; malformed ones are a 400 so a typo cannot silently do nothing."""
    usage: tuple[int, int] | None = None
    delay_ms: float | None = None
    fault: str | None = None
    gather: int | None = None
    for match in _MARKER_RE.finditer(text):
        name, value = match.groups()
        try:
            if name == "usage":
                prompt, completion = value.split(",")
                usage = (int(prompt), int(completion))
            elif name == "delay":
                delay_ms = float(value)
            elif name == "gather":
                gather = int(value)
                if gather < 1:
                    raise ValueError("a group has at least one request")
            elif value in FAULTS or value == NO_FAULT:
                fault = value
            else:
                raise ValueError(f"unknown fault; expected one of {sorted(FAULTS)} or {NO_FAULT!r}")
        except ValueError as exc:
            raise BadRequest(f"bad marker {match.group(0)!r}: {exc}") from None
    return Markers(usage, delay_ms, fault, gather)


def _first_input_value(text: str) -> str:
    """The first ``[[ ## field ## ]]`` section of a DSPy user message, or the whole text for plain chat."""
    header = _HEADER_RE.search(text)
    if header is None:
        return text.strip()
    start = header.end()
    following = _HEADER_RE.search(text, start)
    if following is not None:
        return text[start : following.start()].strip()
    value = text[start:]
    requirements = value.rfind(_OUTPUT_REQUIREMENTS)  # DSPy appends "Respond with ..." after the last input
    return (value[:requirements] if requirements >= 0 else value).strip()


def _annotation_end(text: str, start: int) -> int:
    """Index of the ``)`` closing a field's type annotation, skipping brackets and quoted Literal values."""
    depth = 0
    quote = ""
    index = start
    while index < len(text):
        char = text[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in "[(":
            depth += 1
        elif char in "])":
            if char == ")" and depth == 0:
                return index
            depth -= 1
        elif char == "\n":
            break
        index += 1
    return -1


def _parse_annotation(annotation: str) -> Any:
    """Parse a DSPy annotation name such as ``dict[str, list[int]]`` into ``(name, [args])`` nodes.

    Quoted and numeric Literal members become ``("literal", value)``. Raises ``IndexError``/``ValueError``
    on input it cannot read; the caller then treats the type as free text.
    """
    tokens: list[tuple[str, str]] = []
    position = 0
    annotation = annotation.strip()
    while position < len(annotation):
        match = _TYPE_TOKEN_RE.match(annotation, position)
        if match is None or match.end() == position:
            raise ValueError(f"cannot tokenize annotation {annotation!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    cursor = 0

    def node() -> Any:
        nonlocal cursor
        kind, value = tokens[cursor]
        cursor += 1
        if kind in ("str", "num"):
            return ("literal", ast.literal_eval(value))
        if kind != "name":
            raise ValueError(f"unexpected {value!r} in annotation")
        args: list[Any] = []
        if cursor < len(tokens) and tokens[cursor] == ("punct", "["):
            cursor += 1
            while tokens[cursor] != ("punct", "]"):
                args.append(node())
                if tokens[cursor] == ("punct", ","):
                    cursor += 1
            cursor += 1
        return (value, args)

    return node()


def _node_schema(node: Any) -> Schema:
    """Translate a parsed annotation into the JSON-schema subset ``_value_for`` understands."""
    name, args = node
    if name in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[name]
    if name == "Literal":
        return {
            "enum": [arg[1] if arg[0] == "literal" else _LITERAL_NAMES.get(arg[0], arg[0]) for arg in args]
        }
    if name in _ARRAY_TYPES:
        return {"type": "array", "items": _node_schema(args[0]) if args else {}}
    if name in ("tuple", "Tuple"):
        if len(args) == 2 and args[1][0] in ("Ellipsis", "..."):
            return {"type": "array", "items": _node_schema(args[0])}
        return {"type": "array", "prefixItems": [_node_schema(arg) for arg in args]}
    if name in _MAPPING_TYPES:
        return {"type": "object", "additionalProperties": _node_schema(args[1]) if len(args) == 2 else {}}
    if name in ("Union", "Optional"):
        return {"anyOf": [_node_schema(arg) for arg in args]}
    if name == "Annotated" and args:
        return _node_schema(args[0])
    return {}  # Any, or a type we cannot see into: answered with the echo text


def _annotation_schema(annotation: str) -> Schema:
    try:
        return _node_schema(_parse_annotation(annotation))
    except (IndexError, ValueError, SyntaxError, TypeError):
        return {}


def _hint_line(system: str, marker: str) -> str | None:
    """The text after ``marker`` on its line of the system message, decoding JSONAdapter's string escaping."""
    index = system.find(marker)
    if index < 0:
        return None
    line_start = system.rfind("\n", 0, index) + 1
    line_end = system.find("\n", index)
    line = system[line_start : line_end if line_end >= 0 else len(system)].strip()
    if line.startswith('"'):  # JSONAdapter puts the hint inside a JSON string: `"name": "{name}  # note..."`
        try:
            (line,) = json.loads("{" + line.rstrip(",") + "}").values()
        except (ValueError, TypeError):
            return None
        index = line.find(marker)
        if index < 0:
            return None
    else:
        index = index - line_start
    return line[index + len(marker) :]


def _field_schema(system: str, name: str, annotation: str) -> Schema:
    """Prefer DSPy's own per-field hint (a full JSON schema, e.g. for pydantic models) over the annotation."""
    schema_hint = _hint_line(system, _SCHEMA_HINT % name)
    if schema_hint is not None:
        try:
            schema, _ = json.JSONDecoder().raw_decode(schema_hint)
        except ValueError:
            schema = None
        if isinstance(schema, dict):
            return schema
    enum_hint = _hint_line(system, _ENUM_HINT % name)
    if enum_hint is not None:
        return {"enum": enum_hint.split("; ")}
    return _annotation_schema(annotation)


@functools.lru_cache(maxsize=1024)
def _output_fields(system: str) -> OutputFields:
    """Output fields (name, schema) requested by a DSPy system message; cached because prompts repeat."""
    start = system.find(_OUTPUT_FIELDS_INTRO)
    if start < 0:
        return ()
    section = system[start + len(_OUTPUT_FIELDS_INTRO) :]
    end = section.find(_STRUCTURE_INTRO)
    if end >= 0:
        section = section[:end]
    fields: list[tuple[str, Schema]] = []
    for match in _OUTPUT_FIELD_RE.finditer(section):
        close = _annotation_end(section, match.end())
        if close >= 0:
            name = match.group(1)
            fields.append((name, _field_schema(system, name, section[match.end() : close])))
    return tuple(fields)


# ----------------------------------------------------------------------------------------------------------
# Answer generation
# ----------------------------------------------------------------------------------------------------------


def _value_for(schema: Any, root: Schema, echo: str, size: int, depth: int = 0) -> Any:
    """A value valid for ``schema``: strings echo, ints are ``size`` (the echoed input's length), floats
    ``float(size)``, booleans ``True``, enums/Literals their first member, arrays one element, objects all
    declared properties (or ``{"echo": ...}`` for open mappings such as ``dict[str, Any]``)."""
    if not isinstance(schema, dict) or depth > 16:
        return echo
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return _value_for(target, root, echo, size, depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            chosen = next((o for o in options if not (isinstance(o, dict) and o.get("type") == "null")), None)
            return _value_for(options[0] if chosen is None else chosen, root, echo, size, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "integer":
        return size
    if kind == "number":
        return float(size)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "array":
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list) and prefix:
            return [_value_for(item, root, echo, size, depth + 1) for item in prefix]
        return [_value_for(schema.get("items", {}), root, echo, size, depth + 1)]
    properties = schema.get("properties")
    if isinstance(properties, dict) and properties:
        return {key: _value_for(sub, root, echo, size, depth + 1) for key, sub in properties.items()}
    if kind == "object":
        return {"echo": _value_for(schema.get("additionalProperties", {}), root, echo, size, depth + 1)}
    return echo


def _chat_adapter_text(value: Any) -> str:
    """Render a value the way DSPy's ChatAdapter parses it back: strings raw, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _build_content(system: str, response_format: Any, first_input: str) -> str:
    """The assistant message: JSON when ``response_format`` asks for it, ChatAdapter sections otherwise."""
    echo = f"Echo: {first_input}"
    size = len(first_input)
    format_type = response_format.get("type") if isinstance(response_format, dict) else None
    if format_type == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict) and schema:
            return json.dumps(_value_for(schema, schema, echo, size), ensure_ascii=False)
    fields = _output_fields(system)
    # JSONAdapter only sends response_format when the model claims support; otherwise obey its prompt.
    if format_type in ("json_object", "json_schema") or _JSON_ADAPTER_INTRO in system:
        if not fields:
            return json.dumps({"echo": echo}, ensure_ascii=False)
        values = {name: _value_for(schema, schema, echo, size) for name, schema in fields}
        return json.dumps(values, ensure_ascii=False)
    if not fields:
        return echo  # not a DSPy prompt: behave like a plain echo bot
    sections = [
        f"[[ ## {name} ## ]]\n{_chat_adapter_text(_value_for(schema, schema, echo, size))}"
        for name, schema in fields
    ]
    sections.append("[[ ## completed ## ]]")
    return "\n\n".join(sections)


def _split(content: str) -> list[str]:
    """Cut content into ~20-character pieces, never fewer than three, so clients see real incremental SSE."""
    count = max(MIN_STREAM_CHUNKS, -(-len(content) // STREAM_CHUNK_CHARS))
    base, extra = divmod(len(content), count)
    pieces: list[str] = []
    start = 0
    for index in range(count):
        end = start + base + (1 if index < extra else 0)
        pieces.append(content[start:end])
        start = end
    return pieces


def _json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps(payload, ensure_ascii=False).encode()
    return web.Response(body=body, status=status, headers=headers, content_type="application/json")


def _bad_request(message: str) -> web.Response:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    return _json_response({"error": error}, status=400)


async def _cut_short(
    request: web.Request, body: bytes, content_type: str, sent: bytes | None = None
) -> web.StreamResponse:
    """A 200 announcing ``body`` (its full ``Content-Length``) whose connection closes after ``sent``
    (default: the first half): the answer stops mid-way, as when a proxy or the provider dies."""
    response = web.StreamResponse(headers={"Content-Type": content_type})
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2] if sent is None else sent)
    if request.transport is not None:
        request.transport.close()
    return response


async def _sleep_while_connected(request: web.Request, seconds: float) -> bool:
    """Sleep up to ``seconds`` but stop as soon as the client hangs up, so stalled requests cannot pile up.

    Runners created with ``handler_cancellation=True`` (like the CLI's) cancel the handler outright on
    disconnect; polling covers embedders that keep aiohttp's default. Returns whether the client stayed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return False
        remaining = deadline - loop.time()
        if remaining <= 0:
            return True
        await asyncio.sleep(min(remaining, STALL_POLL_S))


# ----------------------------------------------------------------------------------------------------------
# HTTP handlers
# ----------------------------------------------------------------------------------------------------------


class MockLLM:
    """Request handlers plus the state they share (config, stats, recent request bodies)."""

    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self.stats = Stats()
        self.recorded: deque[Any] = deque(maxlen=config.history_size)
        self._ids = itertools.count(1)
        self.scripts: dict[str, FaultScript] = {}
        self.model_requests: dict[str, int] = {}
        self.model_tokens: dict[str, int] = {}  # billed: prompt + completion of every answer sent
        self._groups: dict[int, Gathering] = {}  # [gather=N]: the group still filling up, per N

    async def _gather(self, size: int) -> None:
        """Wait until ``size`` requests of one ``[gather=N]`` group have arrived (or the timeout)."""
        group = self._groups.get(size)
        if group is None or group.full.is_set():
            group = self._groups[size] = Gathering()
        group.arrived += 1
        if group.arrived >= size:
            group.full.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.gather_timeout_s):
                await group.full.wait()

    def _script_for(self, model: str) -> FaultScript | None:
        """``model``'s fault script, else the one for every model (``"*"``), if any."""
        if not self.scripts:
            return None
        return self.scripts.get(model) or self.scripts.get("*")

    def _choose_fault(self, marker: str | None) -> str | None:
        """A ``[fault=...]`` marker wins; otherwise the global ``MOCK_FAULT`` strikes with ``error_rate``."""
        if marker is not None:
            return None if marker == NO_FAULT else marker
        fault = self.config.fault
        if fault is None:
            return None
        rate = self.config.error_rate
        return fault if rate >= 1.0 or random.random() < rate else None

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions``: track concurrency around the real work in ``_complete``."""
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        try:
            return await self._complete(request)
        except BadRequest as exc:
            return _bad_request(str(exc))
        finally:
            stats.in_flight -= 1

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
        except ValueError:
            raise BadRequest("request body is not valid JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            raise BadRequest("request body must be an object with a `messages` list")
        self.recorded.append(body)
        system, last_user, prompt_chars = _scan_messages(body["messages"])
        markers = _parse_markers(last_user)
        if markers.delay_ms is None and "[delay=" in system:
            markers = dataclasses.replace(markers, delay_ms=_system_delay(system))
        model = str(body.get("model") or MODEL_ID)
        self.model_requests[model] = self.model_requests.get(model, 0) + 1
        script = self._script_for(model) if markers.fault is None else None
        if script is not None:
            fault, retry_after = script.next_fault(), script.retry_after
        else:
            fault, retry_after = self._choose_fault(markers.fault), "1"
        if fault is not None:
            self.stats.faults += 1
        if markers.gather is not None:
            await self._gather(markers.gather)
        delay_s = (self.config.delay_ms if markers.delay_ms is None else markers.delay_ms) / 1000.0
        stream = body.get("stream") is True

        # Plain answers and error faults wait up front; streamed answers spread the delay over their chunks.
        if fault in ("500", "429", "drop", "badjson", "cut") or not stream:
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            delay_s = 0.0
        if fault == "500":
            return _json_response(SERVER_ERROR_BODY, status=500)
        if fault == "429":
            return _json_response(RATE_LIMIT_BODY, status=429, headers={"retry-after": retry_after})
        if fault == "badjson":
            return web.Response(body=BADJSON_BODY, content_type="application/json")
        if fault == "drop":
            if request.transport is not None:
                request.transport.close()  # FIN without a byte of response; aiohttp then skips the reply
            return web.Response(status=204)
        if fault == "stall" and not await _sleep_while_connected(request, self.config.stall_s):
            return web.Response(status=204)  # client already gone: nothing to send

        if fault == "malformed":
            content = MALFORMED_CONTENT
        else:
            content = _build_content(system, body.get("response_format"), _first_input_value(last_user))
        choices = body.get("n")
        choices = choices if isinstance(choices, int) and 1 <= choices <= 128 and not stream else 1
        if markers.usage is not None:
            prompt_tokens, completion_tokens = markers.usage
        else:
            prompt_tokens, completion_tokens = prompt_chars // 4, (len(content) // 4 + 1) * choices
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        self.model_tokens[model] = self.model_tokens.get(model, 0) + usage["total_tokens"]
        well_formed = fault is None or fault == "stall"
        base = {
            "id": f"chatcmpl-mock-{next(self._ids)}",
            "created": int(time.time()),
            "model": body.get("model") or MODEL_ID,
            "system_fingerprint": "fp_mock",
        }
        if stream:
            cut = fault == "cut"
            return await self._stream(request, body, base, content, usage, delay_s, well_formed, cut)
        message = {"role": "assistant", "content": content, "refusal": None}
        payload = {
            "id": base["id"],
            "object": "chat.completion",
            **base,
            "choices": [
                {"index": index, "message": message, "logprobs": None, "finish_reason": "stop"}
                for index in range(choices)
            ],
            "usage": usage,
        }
        if fault == "cut":
            return await _cut_short(request, json.dumps(payload).encode(), "application/json")
        if well_formed:
            self.stats.completions += 1
        return _json_response(payload)

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        base: dict[str, Any],
        content: str,
        usage: dict[str, int],
        delay_s: float,
        well_formed: bool,
        cut: bool = False,
    ) -> web.StreamResponse:
        """Send ``chat.completion.chunk`` SSE events like OpenAI, spreading the delay over content chunks.

        ``cut``: the first half of the events, then the connection closes (no ``[DONE]``)."""
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True

        def event(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            chunk: dict[str, Any] = {
                "id": base["id"],
                "object": "chat.completion.chunk",
                **base,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                chunk["usage"] = None  # OpenAI sends null usage on every chunk but the last
            return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"

        pieces = _split(content)
        frames = [event({"role": "assistant", "content": ""})]
        frames.extend(event({"content": piece}) for piece in pieces)
        tail = [event({}, "stop")]
        if include_usage:
            usage_chunk = {
                "id": base["id"],
                "object": "chat.completion.chunk",
                **base,
                "choices": [],
                "usage": usage,
            }
            tail.append(b"data: " + json.dumps(usage_chunk).encode() + b"\n\n")
        tail.append(b"data: [DONE]\n\n")
        if cut:
            stream_body = b"".join(frames + tail)
            return await _cut_short(request, stream_body, "text/event-stream", b"".join(frames[:2]))

        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        try:
            await response.prepare(request)
            if delay_s > 0:
                step = delay_s / len(pieces)
                await response.write(frames[0])
                for frame in frames[1:]:
                    await asyncio.sleep(step)
                    await response.write(frame)
                await response.write(b"".join(tail))
            else:
                await response.write(b"".join(frames) + b"".join(tail))  # one write: fastest for load tests
            await response.write_eof()
        except ConnectionError:
            return response  # client hung up mid-stream; aiohttp ignores the rest
        if well_formed:
            self.stats.completions += 1
        return response

    async def get_stats(self, request: web.Request) -> web.Response:
        """``GET /stats``: the ``Stats`` counters as JSON."""
        return _json_response(asdict(self.stats))

    async def reset_stats(self, request: web.Request) -> web.Response:
        """``POST /stats/reset``: zero the counters and the history (peak restarts at current in-flight)."""
        self.stats.reset()
        self.recorded.clear()
        self.model_requests.clear()
        self.model_tokens.clear()
        return _json_response(asdict(self.stats))

    async def model_stats(self, request: web.Request) -> web.Response:
        """``GET /stats/models``: chat requests received per model (the body's ``model``)."""
        return _json_response(self.model_requests)

    async def token_stats(self, request: web.Request) -> web.Response:
        """``GET /stats/tokens``: tokens billed per model (every answer's ``usage``, faulted or not)."""
        return _json_response(self.model_tokens)

    async def set_faults(self, request: web.Request) -> web.Response:
        """``POST /faults``: a model's fault script (module docstring), replacing its previous one."""
        try:
            model, script = FaultScript.parse(json.loads(await request.read()))
        except ValueError as exc:  # BadRequest, or a body that is not JSON
            return _bad_request(str(exc) if isinstance(exc, BadRequest) else "body is not valid JSON")
        self.scripts[model] = script
        return _json_response({"model": model, "sequence": list(script.sequence), "then": script.then})

    async def clear_faults(self, request: web.Request) -> web.Response:
        """``DELETE /faults``: every fault script ends."""
        self.scripts.clear()
        return _json_response({"cleared": True})

    async def get_requests(self, request: web.Request) -> web.Response:
        """``GET /requests?limit=K``: the K most recent chat request bodies, newest last."""
        recorded = list(self.recorded)
        raw_limit = request.query.get("limit")
        if raw_limit is not None:
            try:
                limit = int(raw_limit)
            except ValueError:
                limit = -1
            if limit < 0:
                return _bad_request("limit must be a non-negative integer")
            recorded = recorded[max(0, len(recorded) - limit) :]
        return _json_response({"requests": recorded})

    async def health(self, request: web.Request) -> web.Response:
        """``GET /health``: liveness for test harnesses waiting on start-up."""
        return _json_response({"ok": True})

    async def models(self, request: web.Request) -> web.Response:
        """``GET /v1/models``: the OpenAI model list, for clients that probe it before calling."""
        model = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "mock"}
        return _json_response({"object": "list", "data": [model]})


MOCK_LLM_KEY = web.AppKey("mock_llm", MockLLM)


def build_app(config: MockConfig | None = None) -> web.Application:
    """Create the aiohttp application (config from ``MOCK_*`` env by default) so tests can embed it.

    ``app[MOCK_LLM_KEY]`` is the ``MockLLM`` holding stats and recorded requests. Embedders should create
    their runner with ``access_log=None`` (speed) and ``handler_cancellation=True`` (prompt stall cleanup).
    """
    mock = MockLLM(config or MockConfig.from_env())
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[MOCK_LLM_KEY] = mock
    app.add_routes(
        [
            web.post("/v1/chat/completions", mock.chat_completions),
            web.post("/chat/completions", mock.chat_completions),
            web.get("/stats", mock.get_stats),
            web.post("/stats/reset", mock.reset_stats),
            web.get("/stats/models", mock.model_stats),
            web.get("/stats/tokens", mock.token_stats),
            web.post("/faults", mock.set_faults),
            web.delete("/faults", mock.clear_faults),
            web.get("/requests", mock.get_requests),
            web.get("/health", mock.health),
            web.get("/v1/models", mock.models),
            web.get("/models", mock.models),
        ]
    )
    return app


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------


async def serve(host: str, port: int, config: MockConfig) -> None:
    """Run until SIGINT/SIGTERM, announcing the bound address on one flushed stdout line."""
    runner = web.AppRunner(
        build_app(config), access_log=None, handler_cancellation=True, shutdown_timeout=1.0
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    bound_port = runner.addresses[0][1]
    url_host = f"[{host}]" if ":" in host else host
    print(
        f"mock LLM listening on http://{url_host}:{bound_port}/v1 (delay={config.delay_ms:g}ms)", flush=True
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when available: it roughly doubles what one core can serve."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _exit_on_stdin_eof() -> None:
    """Block on stdin, a pipe whose other end only the parent holds: EOF means the parent is gone."""
    sys.stdin.buffer.read()
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible mock LLM for DSPy tests and load tests.")
    parser.add_argument("--host", default=os.environ.get("MOCK_HOST") or DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=int(os.environ.get("MOCK_PORT") or DEFAULT_PORT))
    parser.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="exit when stdin closes: the process that started it (runserver) has ended, however it ended",
    )
    args = parser.parse_args(argv)
    if args.exit_with_parent:
        threading.Thread(target=_exit_on_stdin_eof, name="parent-watch", daemon=True).start()
    try:
        config = MockConfig.from_env()
    except ValueError as exc:
        parser.error(str(exc))
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(args.host, args.port, config))


if __name__ == "__main__":
    sys.exit(main())
