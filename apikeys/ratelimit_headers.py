"""The IETF ``RateLimit-Policy`` and ``RateLimit`` fields (draft-ietf-httpapi-ratelimit-headers-09).

Both are Structured Field Lists (RFC 9651) of quoted policy names with parameters::

    RateLimit-Policy: "rpm";q=30;w=60, "tokens";q=100000;qu="tokens";w=86400
    RateLimit: "rpm";r=29;t=58, "tokens";r=99200;t=86341

``q`` is the quota, ``w`` the window in seconds, ``qu`` the quota unit (the draft registers
``requests``, the default, and ``concurrent-requests``; ``tokens`` and ``usd-micros`` are this
server's), ``r`` what remains and ``t`` the seconds until some of it comes back. Every parameter is
an SF Integer: a dollar budget is stated in millionths of a dollar.
"""

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    quota: int
    window_s: int | None = None
    unit: str | None = None  # None: requests


@dataclass(frozen=True, slots=True)
class Remaining:
    name: str
    remaining: int
    reset_s: float | None = None  # None: not time-based (concurrency)


def sf_string(value: str) -> str:
    """An SF String: quoted, with ``\\`` and ``"`` escaped (the names here are plain ASCII)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def policy_field(policies: list[Policy]) -> str:
    return ", ".join(
        _member(
            policy.name, q=max(policy.quota, 0), qu=policy.unit and sf_string(policy.unit), w=policy.window_s
        )
        for policy in policies
    )


def ratelimit_field(states: list[Remaining]) -> str:
    return ", ".join(
        _member(
            state.name,
            r=max(state.remaining, 0),
            t=None if state.reset_s is None else max(math.ceil(state.reset_s), 0),
        )
        for state in states
    )


def _member(name: str, **parameters: int | str | None) -> str:
    """One list member: the quoted name, then ``;key=value`` for each parameter that is set."""
    return sf_string(name) + "".join(
        f";{key}={value}" for key, value in parameters.items() if value is not None
    )
