"""Who is calling: set by the API-key check, read when the call's telemetry record is made.

Kept apart from :mod:`apikeys.auth` so readers (telemetry) import nothing heavy.
"""

import contextvars
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    """An API key, or a staff user of the playground (``key_id`` None)."""

    key_id: int | None
    name: str
    expires_at: float | None = None  # Unix time

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


# Set by a successful authentication, for the rest of that request (its tasks included).
current_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("api_caller", default=None)
