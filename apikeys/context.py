"""Who is calling: set by the API-key check, read when the call's telemetry record is made.

Kept apart from :mod:`apikeys.auth` so readers (telemetry) import nothing heavy.
"""

import contextvars
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apikeys.quotas import Admission


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


@dataclass(frozen=True, slots=True)
class Caller:
    """An API key, or a staff user of the playground (``key_id`` None)."""

    key_id: int | None
    name: str
    expires_at: float | None = None  # Unix time
    quota: Quota | None = None  # None: no limit at all

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


# Set by a successful authentication, for the rest of that request (its tasks included).
current_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("api_caller", default=None)

# Set when a request with quotas is admitted (apikeys.quotas): its slot is freed when the request ends.
# (Its LM calls' tokens and dollars are reserved through programs.lm_gates: apikeys.token_reservations.)
current_admission: "contextvars.ContextVar[Admission | None]" = contextvars.ContextVar(
    "api_admission", default=None
)
