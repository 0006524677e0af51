"""Who is calling: set by the API-key check, read when the call's telemetry record is made.

Kept apart from :mod:`apikeys.auth` so readers (telemetry) import nothing heavy.
"""

import contextvars
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Quota:
    """An API key's limits (None: no limit), enforced across servers by :mod:`apikeys.quotas`."""

    rpm: int | None = None
    tokens_per_day: int | None = None
    budget_usd: float | None = None  # per rolling 30 days
    max_in_flight: int | None = None

    def __bool__(self) -> bool:
        return any(
            value is not None
            for value in (self.rpm, self.tokens_per_day, self.budget_usd, self.max_in_flight)
        )


INVOKE, READ, ADMIN = "invoke", "read", "admin"
DEFAULT_SCOPES = frozenset({INVOKE, READ})  # a new key's (apikeys.models.DEFAULT_SCOPES)
ALL_SCOPES = frozenset({INVOKE, READ, ADMIN})  # staff sessions'


@dataclass(frozen=True, slots=True)
class Caller:
    """An API key, or a staff user of the playground (``key_id`` None, every scope)."""

    key_id: int | None
    name: str
    expires_at: float | None = None  # Unix time
    quota: Quota | None = None  # None: no limit at all
    scopes: frozenset[str] = DEFAULT_SCOPES

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def may(self, scope: str) -> bool:
        """``admin`` may do everything."""
        return scope in self.scopes or ADMIN in self.scopes

    @property
    def own_key_id(self) -> int | None:
        """Whose calls and spend this caller may read: its key's, or None for every key's (admin)."""
        return None if ADMIN in self.scopes else self.key_id


# Set by a successful authentication, for the rest of that request (its tasks included).
current_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("api_caller", default=None)
