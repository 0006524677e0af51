"""A per-request check of each LM call, installed by whoever admitted the request.

The core knows nothing of API keys. A request admitted under a quota that counts what LM calls
bill (an API key's ``tokens_per_day`` or ``budget_usd``: :mod:`apikeys.token_reservations`) binds
an :class:`LMCallGate` to :data:`current_lm_gate` in the context the program runs in;
:mod:`programs.upstream` then asks it before every upstream request of that call:

* ``reserve(bound)`` with what the request can bill at most (:func:`programs.pricing.call_token_bound`,
  priced by :class:`programs.pricing.Prices`): a handle, or :class:`LMCallRefused` (nothing is sent);
* ``settle(handle, tokens, cost_usd)`` with what the upstream billed once it answered (0 when it
  failed without an answer). A call cancelled in flight is never settled: its reservation stands,
  since the provider may bill it anyway.

No gate bound (no key, or a key without token or dollar quotas): one ``ContextVar.get`` per LM
call, and the fast path of :mod:`programs.upstream` stays as it was.
"""

import contextvars
from dataclasses import dataclass
from typing import Protocol

from dspy.utils.exceptions import LMError


@dataclass(frozen=True, slots=True)
class CallBound:
    """The most one upstream request can bill: its tokens and their price (0.0: unpriced)."""

    tokens: int
    cost_usd: float


class LMCallRefused(LMError):
    """The gate refused the call (``status`` 429: over a quota; 503: the quota cannot be checked)."""


class LMCallGate(Protocol):
    def reserve(self, bound: CallBound) -> object: ...

    def settle(self, handle: object, tokens: int, cost_usd: float) -> None: ...

    async def areserve(self, bound: CallBound) -> object: ...

    async def asettle(self, handle: object, tokens: int, cost_usd: float) -> None: ...


current_lm_gate: contextvars.ContextVar[LMCallGate | None] = contextvars.ContextVar(
    "lm_call_gate", default=None
)
