"""The request a piece of code is running for: a request id in a contextvar, and its log filter.

The id is bound for the whole program call (by :func:`programs.calls.reported_call`, which every
program request, gateway call, batch item, stream, MCP tool call and cron item goes through) and
follows the call everywhere a contextvar goes: the event loop task, the sync worker thread
(asgiref copies the context into it), DSPy's LM calls and callbacks. Nothing about a request is
kept in a global.

Every log record gets it as ``request_id`` (``-`` outside a request) from :class:`RequestIdFilter`,
which ``dspysite/settings.py`` puts on the console handler (``%(request_id)s`` in the format).
"""

import itertools
import logging
import re
import uuid
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.http import HttpRequest

NO_REQUEST = "-"
# The header a client may name its request by, echoed back on every program answer.
REQUEST_ID_HEADER = "X-Request-ID"
# The program version a client asks for (``v3`` or an alias name; none: ``production``), and the
# one that answered, on every program answer (the versions app resolves it: programs.program).
VERSION_HEADER = "X-Program-Version"

current_request_id: ContextVar[str] = ContextVar("current_request_id", default=NO_REQUEST)

# New ids are a random per-process prefix plus a counter: unique without a syscall per request.
_ID_PREFIX = uuid.uuid4().hex[:12]
_ID_COUNTER = itertools.count(1)


# What a client may send as its own id (``X-Request-ID``, an MCP call's ``_meta.request_id``).
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def new_request_id() -> str:
    return f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"


def client_request_id(value: object) -> str | None:
    """The id a client sent, when it is well-formed; None otherwise."""
    return value if isinstance(value, str) and _CLIENT_ID.match(value) else None


def request_id_from(value: object) -> str:
    """The client's id when well-formed, else a new one: the rule of every front door."""
    return client_request_id(value) or new_request_id()


def request_id(request: "HttpRequest") -> str:
    """An HTTP request's id: its ``X-Request-ID`` when well-formed, else a new one."""
    return request_id_from(request.headers.get(REQUEST_ID_HEADER, ""))


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id``: the request the logging code ran for, or ``-``.

    A record that already carries one (``logger.info(..., extra={"request_id": ...})``) keeps it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id.get()
        return True
