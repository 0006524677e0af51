"""DSPy's media types (``dspy.Image``, ``dspy.Audio``) as request fields: a string in, the DSPy object out.

Left to pydantic, a ``dspy.Image`` hint is an object (``{"url": ...}``) and the string every client
sends (a URL or a ``data:`` URI) is a 422. :func:`request_annotation` swaps each media type in a
``forward`` hint, also inside ``Optional``, ``list``, ``dict``, ``tuple`` and unions, for an
annotated type whose JSON schema is a string with ``format: uri`` (a ``data:`` URI is a URI too;
OpenAPI tools show it as ``string($uri)`` and code generators map it to their string or URI type,
where a custom format would mean nothing to them) and whose validator builds the DSPy object, so
every front door gets the same conversion through the input model. The program receives a
``dspy.Image``, which DSPy's adapters send to the model as an ``image_url`` content part.

Nothing is downloaded: an image URL goes to the model (DSPy 3.4.1's constructors do not fetch
either; only its explicit ``from_url`` does), without its ``user:password@`` (which never reaches
the model or the log). The model's provider fetches it, so a URL naming a private, loopback or
link-local host (a literal IP, ``localhost``) is refused unless ``DSPY_ALLOW_PRIVATE_MEDIA_URLS``
(a self-hosted model fetching from the private network). No DNS is resolved on the request path: a
host name that resolves to a private address is for the egress proxy to refuse. Audio has no URL
form in the OpenAI wire format (``input_audio`` carries base64 data), so audio must be a
``data:audio/...;base64,`` URI.
A ``data:`` URI is checked cheaply (media type, base64 alphabet and length), so a wrong value is a
422 naming the field rather than a 502 from the model. Other ``dspy.Type`` subclasses (``Code``,
``File``, ``Document``...) validate with their own pydantic validators, which already accept strings.
"""

import ipaddress
import re
import socket
import types
import typing
from collections.abc import Callable
from functools import cache
from typing import Annotated, Any, Literal, Union
from urllib.parse import SplitResult, urlsplit, urlunsplit

import dspy
from django.conf import settings
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
    if url.scheme != "gs" and not settings.DSPY_ALLOW_PRIVATE_MEDIA_URLS and private_host(url.hostname or ""):
        raise ValueError(
            f"the image URL's host ({url.hostname}) is private, loopback or link-local: the model's "
            "provider cannot fetch it (DSPY_ALLOW_PRIVATE_MEDIA_URLS=true allows it for self-hosted models)"
        )
    return urlunsplit(without_userinfo(url)) if "@" in url.netloc else value


def without_userinfo(url: SplitResult) -> SplitResult:
    """``url`` without its ``user:password@`` (credentials go neither to the model nor to the log)."""
    return url._replace(netloc=url.netloc.rpartition("@")[2])


_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+", re.IGNORECASE)


def private_host(host: str) -> bool:
    """Whether ``host`` (a URL's host name, without brackets) names this machine or a private
    network: ``localhost`` or a literal IP that is not globally routable (private, loopback,
    link-local, unspecified, reserved; IPv4 in an IPv6 address too). Reads the text only, never
    DNS. Also the legacy IPv4 forms HTTP clients still accept (``127.1``, ``2130706433``,
    ``0x7f.0.0.1``)."""
    host = host.rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.partition("%")[0])  # fe80::1%eth0: a zone
    except ValueError:
        if not _NUMERIC_HOST.fullmatch(host):
            return False
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))  # parses the text; no lookup
        except OSError:
            return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global


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
