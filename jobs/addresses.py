"""Outbound URLs the server fetches or posts to for a caller (``inputs_url``, webhooks): never a
private, loopback, link-local or otherwise internal address unless ``DSPY_WEBHOOK_ALLOW_PRIVATE``.

The host name is resolved and every address it resolves to is checked (one private address is
enough to refuse). Resolution happens again when the request is made, so a DNS answer that changes
in between (rebinding) is not covered here: an egress proxy is the place for that.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings


class AddressRefused(Exception):
    pass


def check_url(url: str) -> None:
    """Raise :class:`AddressRefused` unless ``url`` is http(s) to a public address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AddressRefused("must be an http:// or https:// URL with a host")
    if settings.DSPY_WEBHOOK_ALLOW_PRIVATE:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise AddressRefused(f"cannot resolve {parts.hostname}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not address.is_global:
            raise AddressRefused(
                f"{parts.hostname} resolves to {address}, a private or loopback address "
                "(DSPY_WEBHOOK_ALLOW_PRIVATE=true allows it)"
            )
