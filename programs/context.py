"""The request a piece of code is running for: a request id in a contextvar, and its log filter.

The id is bound for the whole program call (by ``telemetry.services.InferenceTracking``, the
record every program request, batch item and stream is made under) and follows the call everywhere a
contextvar goes: the event loop task, the sync worker thread (asgiref copies the context into
it), DSPy's LM calls and callbacks. Nothing about a request is kept in a global.

Every log record gets it as ``request_id`` (``-`` outside a request) from :class:`RequestIdFilter`,
which ``dspysite/settings.py`` puts on the console handler (``%(request_id)s`` in the format).
"""

import logging
from contextvars import ContextVar

NO_REQUEST = "-"

current_request_id: ContextVar[str] = ContextVar("current_request_id", default=NO_REQUEST)


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id``: the request the logging code ran for, or ``-``.

    A record that already carries one (``logger.info(..., extra={"request_id": ...})``) keeps it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id.get()
        return True
