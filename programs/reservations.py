"""A caller's quota for one request, taken and settled by one async context manager at every door.

The serving core knows no API keys. It defines the seam; the API keys (``apikeys.quotas``) plug
their quotas in at ``ready()`` with :func:`install`, as telemetry subscribes to the events. Every
door that lets a caller in goes through :func:`quota_reserved`:

* the HTTP doors (plain and gateway routes, ``/batch``, ``/stream``): entered right after the key
  check, so a request is charged before its body is validated, and held by the request's lifetime
  (``dspysite.middleware.request_lifetime``) until its answer is sent, streamed body included;
* ``/mcp``: around the SDK's handling of the POST (``mcp_tools.endpoint``);
* (later) a job or a background run: around its items.

Entering takes the quota (or raises :class:`QuotaRefused`: 429, or 503 when it cannot be checked);
the reservation's ``headers`` (``RateLimit-Policy``, ``RateLimit``) go on the door's answer; its
``lm_gate`` is bound for the calls made meanwhile, so each LM call reserves the tokens and dollars
it can bill and settles them with what it billed (:mod:`programs.lm_gates`: what a request spends
is only known per LM call); leaving frees what the request held (its in-flight slot), whatever
ended the request (answered, failed, cancelled: the settlement then runs in a task of its own, so a
second cancellation cannot lose it).
"""

import asyncio
import contextvars
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

from programs.lm_gates import LMCallGate, current_lm_gate


class QuotaRefused(Exception):
    """Answered as ``status`` with ``{"detail": ..., "error_type": "quota_exceeded"}`` and ``headers``."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str]) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers

    def body(self) -> dict[str, str]:
        return {"detail": self.detail, "error_type": "quota_exceeded"}


class QuotaReservation(Protocol):
    """A caller's quota taken for one request (``apikeys.quotas.KeyQuotaReservation``)."""

    @property
    def headers(self) -> Mapping[str, str]:
        """For the door's answer: ``RateLimit-Policy`` and ``RateLimit``."""

    @property
    def lm_gate(self) -> LMCallGate | None:
        """What each LM call of the request reserves and settles (tokens, dollars), or None."""

    async def settle(self) -> None:
        """Free what was held for the request. Idempotent, never raises."""


class Quotas(Protocol):
    async def __call__(self, caller: Any) -> QuotaReservation | None:
        """Take ``caller``'s quota for one request (None: the caller has none), or raise QuotaRefused."""


_quotas: Quotas | None = None
_settling: set[asyncio.Task[None]] = set()  # strong references: the loop holds tasks weakly


def install(quotas: Quotas | None) -> None:
    """Plug a caller-quota implementation in (from an app's ``ready()``); None takes it out."""
    global _quotas
    _quotas = quotas


@asynccontextmanager
async def quota_reserved(caller: Any) -> AsyncIterator[QuotaReservation | None]:
    """Take ``caller``'s quota for one request (None when nothing is installed or it has none),
    bind its LM-call gate for the calls made meanwhile, settle it on leaving. Raises
    :class:`QuotaRefused` on entering."""
    quotas = _quotas
    reservation = await quotas(caller) if quotas is not None and caller is not None else None
    if reservation is None:
        yield None
        return
    bind_lm_gate(reservation)  # not reset: the HTTP door leaves in another context
    try:
        yield reservation
    finally:
        await settle(reservation)


def bind_lm_gate(reservation: QuotaReservation | None) -> contextvars.Token[LMCallGate | None]:
    """Make the reservation's LM-call gate the one every LM call of this context asks
    (:mod:`programs.lm_gates`). A door whose calls run in another task (``/mcp``'s tool calls)
    binds it there and resets it with the token."""
    return current_lm_gate.set(reservation.lm_gate if reservation is not None else None)


async def settle(reservation: QuotaReservation) -> None:
    """Settle now; in a task of its own when the current task is being cancelled."""
    task = asyncio.current_task()
    if task is None or not task.cancelling():
        await reservation.settle()
        return
    settling = asyncio.get_running_loop().create_task(reservation.settle())
    _settling.add(settling)
    settling.add_done_callback(_settling.discard)
    await asyncio.shield(settling)
