"""Captured inputs and outputs without the bytes of the media in them.

An image or audio input arrives as a ``data:`` URI: kilobytes of base64 that would fill the
inference log. :func:`media_reference` turns each string of the captured JSON into a short
reference (media type, decoded size, SHA-256 prefix) when it is one, enough to tell which file a
call received. Doors that log their keyword arguments (gateways, MCP, cron) capture a
``dspy.Image`` or ``dspy.Audio`` as DSPy serialises it (a content part between DSPy's custom-type
markers; audio as bare base64): that becomes the same reference, or the image URL, as the request
body's string would. It runs on the telemetry writer's thread, where ``records.to_log_values``
cleans the captured JSON, never on the request path.
"""

import binascii
import hashlib
import json
import re
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit, urlunsplit

from dspy.adapters.types.base_type import CUSTOM_TYPE_END_IDENTIFIER, CUSTOM_TYPE_START_IDENTIFIER

from programs.dspy_types import without_userinfo

SHA256_PREFIX = 16  # hex digits kept

# A whole value: data:[<media type>][;param...][;base64],<payload>
_WHOLE = re.compile(
    r"data:(?P<media>(?:[\w.+-]+/[\w.+-]+)?)(?P<params>(?:;[\w.+-]+(?:=[^;,\s]*)?)*),(?P<payload>.*)",
    re.DOTALL | re.IGNORECASE,
)
# Inside a longer text (DSPy's serialised ``dspy.Image``, a free-form field): base64 ones only.
_EMBEDDED = re.compile(
    r"data:(?P<media>[\w.+-]+/[\w.+-]+)(?:;[\w.+-]+=[^;,\"\s]*)*;base64,(?P<payload>[A-Za-z0-9+/]*=*)"
)


def media_reference(text: str) -> Any:
    """``text``, or a reference in place of the ``data:`` URI it is (or of each one inside it); an
    http(s) URL without its ``user:password@``."""
    if text.startswith(CUSTOM_TYPE_START_IDENTIFIER) and text.endswith(CUSTOM_TYPE_END_IDENTIFIER):
        inner = text[len(CUSTOM_TYPE_START_IDENTIFIER) : -len(CUSTOM_TYPE_END_IDENTIFIER)]
        if (media := _dspy_media(inner)) is not None:
            return media
    if "@" in text and text[:8].lower().startswith(("http://", "https://")):
        return _url_without_userinfo(text)
    if "data:" not in text and text[:5].lower() != "data:":
        return text
    whole = _WHOLE.fullmatch(text)
    if whole is not None:
        base64 = whole["params"].lower().endswith(";base64")
        return _reference(whole["media"] or "text/plain", whole["payload"], base64)
    return _EMBEDDED.sub(_embedded_reference, text)


def _url_without_userinfo(text: str) -> str:
    try:
        url = urlsplit(text)
    except ValueError:  # not a URL after all (a bracket where an IPv6 host would be)
        return text
    return urlunsplit(without_userinfo(url)) if "@" in url.netloc else text


def _dspy_media(parts: str) -> Any:
    """A serialised ``dspy.Image`` (its URL, or the reference of its data URI) or ``dspy.Audio``."""
    try:
        [part] = json.loads(parts)
        if part["type"] == "image_url":
            return media_reference(part["image_url"]["url"])
        if part["type"] == "input_audio":
            audio = part["input_audio"]
            return _reference(f"audio/{audio['format']}", audio["data"], base64=True)
    except (ValueError, TypeError, KeyError):
        pass  # not one image or audio part: its data: URIs are replaced where they are
    return None


def _reference(media_type: str, payload: str, base64: bool) -> dict[str, Any]:
    content = _decode(payload) if base64 else unquote_to_bytes(payload)
    return {
        "_media": media_type.partition("/")[0].lower() or "data",
        "media_type": media_type.lower(),
        "bytes": len(content),
        "sha256": hashlib.sha256(content).hexdigest()[:SHA256_PREFIX],
    }


def _embedded_reference(match: re.Match[str]) -> str:
    ref = _reference(match["media"], match["payload"], True)
    return f"[{ref['media_type']}, {ref['bytes']} bytes, sha256 {ref['sha256']}]"


def _decode(payload: str) -> bytes:
    try:
        return binascii.a2b_base64(payload)
    except binascii.Error:  # bad padding: still name the payload, by its text
        return payload.encode()
