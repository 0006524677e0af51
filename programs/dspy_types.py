"""DSPy's media types (``dspy.Image``, ``dspy.Audio``) as request fields: a string in, the DSPy object out.

Left to pydantic, a ``dspy.Image`` hint is an object (``{"url": ...}``) and the string every client
sends (a URL or a ``data:`` URI) is a 422. :func:`request_annotation` swaps each media type in a
``forward`` hint, also inside ``Optional``, ``list``, ``dict``, ``tuple`` and unions, for an
annotated type whose JSON schema is a string with ``format: uri`` (a ``data:`` URI is a URI too;
OpenAPI tools show it as ``string($uri)`` and code generators map it to their string or URI type,
where a custom format would mean nothing to them) and whose validator builds the DSPy object, so
every front door gets the same conversion through the input model. The program receives a
``dspy.Image``, which DSPy's adapters send to the model as an ``image_url`` content part.

Nothing is downloaded: an image URL goes to the model as it is (DSPy 3.4.1's constructors do not
fetch either; only its explicit ``from_url`` does). Audio has no URL form in the OpenAI wire format
(``input_audio`` carries base64 data), so audio must be a ``data:audio/...;base64,`` URI.
A ``data:`` URI is checked cheaply (media type, base64 alphabet and length), so a wrong value is a
422 naming the field rather than a 502 from the model. Other ``dspy.Type`` subclasses (``Code``,
``File``, ``Document``...) validate with their own pydantic validators, which already accept strings.
"""

import re
import types
import typing
from collections.abc import Callable
from functools import cache
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

import dspy
from pydantic import PlainValidator, WithJsonSchema

# data:<type>/<subtype>[;param=value...];base64,<payload>
_DATA_URI = re.compile(r"data:(?P<media>[\w.+-]+/[\w.+-]+)(?:;[^;,]*)*?;base64,")
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def request_annotation(annotation: Any) -> Any:
    """``annotation`` with every ``dspy.Image`` / ``dspy.Audio`` in it taking a string in requests."""
    if isinstance(annotation, type):
        if issubclass(annotation, dspy.Image):
            return _image_field(annotation)
        if issubclass(annotation, dspy.Audio):
            return _audio_field(annotation)
        return annotation
    origin = typing.get_origin(annotation)
    if origin is None or origin is Literal:
        return annotation
    args = typing.get_args(annotation)
    converted = tuple(request_annotation(arg) for arg in args)
    if converted == args:
        return annotation
    if origin in (Union, types.UnionType):
        return Union[converted]  # noqa: UP007 - built from a tuple of types
    return origin[converted]


@cache
def _image_field(cls: type[dspy.Image]) -> Any:
    return _media_field(
        cls,
        "Image",
        _image_source,
        "Image: an http(s):// or gs:// URL (passed to the model as is) or a data:image/...;base64,... URI",
    )


@cache
def _audio_field(cls: type[dspy.Audio]) -> Any:
    return _media_field(
        cls, "Audio", _audio_source, "Audio: a data:audio/<format>;base64,... URI (URLs are not downloaded)"
    )


def _media_field(cls: type[dspy.Type], kind: str, source: Callable[[str], str], description: str) -> Any:
    # ``x-dspy-type``, an OpenAPI extension, names DSPy's type (a subclass's too): the playground reads it.
    schema = {"type": "string", "format": "uri", "description": description, "x-dspy-type": kind}
    return Annotated[cls, PlainValidator(_converter(cls, source)), WithJsonSchema(schema)]


def _converter(cls: type[dspy.Type], source: Callable[[str], str]) -> Callable[[Any], dspy.Type]:
    """A validator: the DSPy object itself (from Python callers), or a string it checks and converts."""

    def convert(value: Any) -> dspy.Type:
        if isinstance(value, cls):
            return value
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {type(value).__name__}")
        try:
            return cls(source(value.strip()))
        except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            raise ValueError(str(exc).splitlines()[0]) from None

    return convert


def _image_source(value: str) -> str:
    if value.startswith("data:"):
        _check_data_uri(value, "image")
        return value
    url = urlsplit(value)
    if url.scheme not in ("http", "https", "gs") or not url.netloc:
        raise ValueError("expected an http(s):// or gs:// image URL or a data:image/...;base64,... URI")
    return value


def _audio_source(value: str) -> str:
    if not value.startswith("data:"):
        raise ValueError("expected a data:audio/<format>;base64,... URI (audio URLs are not downloaded)")
    _check_data_uri(value, "audio")
    # Browsers label an .mp3 file audio/mpeg; DSPy would send format "mpeg", OpenAI takes "mp3".
    return (
        "data:audio/mp3" + value[len("data:audio/mpeg") :] if value.startswith("data:audio/mpeg;") else value
    )


def _check_data_uri(value: str, kind: str) -> None:
    header = _DATA_URI.match(value)
    if header is None or not header["media"].startswith(f"{kind}/"):
        raise ValueError(f"expected a data:{kind}/<format>;base64,... URI")
    payload = value[header.end() :]
    data = payload.rstrip("=")
    # Length, padding and alphabet, in C, without decoding: a third of a strict decode's cost (per MB,
    # 1 ms on an idle core; a decode or a regex 3-4 times that).
    if (
        not data
        or len(payload) % 4
        or len(payload) - len(data) > 2
        or not data.isascii()
        or data.encode().translate(None, _BASE64_ALPHABET)
    ):
        raise ValueError("the data: URI's payload is not valid base64")
