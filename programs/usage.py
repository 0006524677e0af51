"""Per-request LM usage: tokens, cost and a per-call breakdown, without ``lm.history``.

DSPy reports usage to the ``usage_tracker`` of the current ``dspy.context``, which the request
path sets per request (``programs.execution``). :class:`RequestUsage` is that tracker: concurrent
requests each have their own, so a row never carries another request's tokens (``lm.history[-1]``
is racy, and empty with history off, which is why dspy-cli logs no tokens at all).

Three hooks fill it, all installed once at start-up:

* ``UsageTracker.add_usage`` (DSPy calls it for every finished or failed LM call): tokens;
* :class:`LMCallTimer`, a DSPy callback on the served LMs: model and duration of each call;
* :func:`install_cost_hook`, a wrapper of ``dspy.clients.execution.finalize`` (DSPy 3.3:
  ``BaseLM._process_lm_response``): the cost DSPy computes per call, which DSPy otherwise only
  stores in the history.

Calls are keyed by DSPy's ``ACTIVE_CALL_ID`` (set by ``with_callbacks`` around each LM call), so
the three hooks meet on the same entry even when calls run in parallel threads.
"""

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from dspy.dsp.utils.settings import settings as dspy_settings
from dspy.utils.callback import ACTIVE_CALL_ID, BaseCallback
from dspy.utils.usage_tracker import UsageTracker

from programs import dspy_patches, events
from programs.context import current_request_id
from programs.dspy_calls import CALLS, UNPRICED

logger = logging.getLogger(__name__)


@dataclass
class LMCall:
    model: str
    started: float | None = None  # perf_counter at on_lm_start
    alias: str = ""  # the registry alias that answered (a fallback's when one did)
    attempts: int = 1  # upstream requests this call took (programs/upstream.py)
    duration_ms: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    error: str | None = None
    cache_hit: bool = False
    response_model: str = ""  # the model the upstream says answered (DSPy's CallResult), if known
    # Captured programs only (RequestUsage.capture): the messages as DSPy sent them and its outputs
    # (held as DSPy built them; cleaned and bounded off the request path, by whoever stores them).
    messages: Any = None
    completion: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cost_usd": self.cost_usd,
            "duration_ms": None if self.duration_ms is None else round(self.duration_ms, 2),
            "error": self.error,
            "cache_hit": self.cache_hit,
            "model_alias": self.alias,
            "attempts": self.attempts,
        }


@dataclass(frozen=True)
class UsageSnapshot:
    """A request's usage, frozen when its response is sent (later late calls do not change it)."""

    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None: LM calls were made but none had a known price
    lm_calls: tuple[dict[str, Any], ...]

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def answered_by(self) -> str:
        """The alias that answered the last LM call ("" without LM calls)."""
        return self.lm_calls[-1].get("model_alias", "") if self.lm_calls else ""

    @property
    def attempts(self) -> int:
        return sum(call.get("attempts", 1) for call in self.lm_calls)


EMPTY_USAGE = UsageSnapshot(0, 0, 0.0, ())

# The attribute of a served LM (programs/lms.py) that names its registry alias.
ALIAS_ATTR = "served_alias"


class RequestUsage(UsageTracker):
    """DSPy's usage tracker for one request, also recording each LM call.

    The lock is per request (sync programs report from a worker thread while the view may read a
    snapshot after a timeout); it is never contended across requests.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._calls: dict[str, LMCall] = {}
        self._priced: dict[int, LMCall] = {}  # thread -> untimed call priced, tokens still to come
        # time.monotonic() by which the request must be answered: retries never wait past it.
        self.deadline: float | None = None
        # The program's calls are captured (programs.capture): keep each LM call's messages and
        # completion for the call trace. Off: one attribute read per LM call, nothing copied.
        self.capture = False

    def __deepcopy__(self, memo: dict[int, Any]) -> "RequestUsage":
        # dspy.Parallel deep-copies the tracker per thread and never merges the copies back, so
        # tokens spent in parallel branches would vanish. The request has one tracker: share it.
        return self

    def add_usage(self, lm: str, usage_entry: dict[str, Any]) -> None:
        with self._lock:
            super().add_usage(lm, usage_entry)  # DSPy's own per-model totals, for code that reads them
            call = self._entry(lm, priced=False)
            call.prompt_tokens += int(usage_entry.get("prompt_tokens") or 0)
            call.completion_tokens += int(usage_entry.get("completion_tokens") or 0)

    def lm_started(self, call_id: str, model: str, alias: str, messages: Any = None) -> None:
        with self._lock:
            self._calls[call_id] = LMCall(
                model=model, started=time.perf_counter(), alias=alias, messages=messages
            )

    def lm_routed(self, alias: str, model: str, attempts: int) -> None:
        """The LM call running in this context took ``attempts`` requests; ``alias`` answered it
        ("" when none did)."""
        with self._lock:
            call = self._calls.get(ACTIVE_CALL_ID.get() or "")
            if call is not None:
                call.alias = alias
                call.model = model or call.model
                call.attempts = attempts

    def lm_finished(
        self, call_id: str, exception: BaseException | None, completion: Any = None
    ) -> LMCall | None:
        with self._lock:
            call = self._calls.get(call_id)
            if call is not None and call.started is not None:
                call.duration_ms = (time.perf_counter() - call.started) * 1000
                call.error = type(exception).__name__ if exception is not None else None
                call.completion = completion
            return call

    def lm_priced(self, model: str, cost: float | None, cache_hit: bool, response_model: str = "") -> None:
        with self._lock:
            call = self._entry(model, priced=not cache_hit)
            call.cost_usd = cost
            call.cache_hit = cache_hit
            call.response_model = response_model

    def snapshot(self) -> UsageSnapshot:
        with self._lock:
            calls = tuple(call.as_dict() for call in self._calls.values())
        if not calls:
            return EMPTY_USAGE
        costs = [call["cost_usd"] for call in calls if call["cost_usd"] is not None]
        return UsageSnapshot(
            prompt_tokens=sum(call["prompt_tokens"] for call in calls),
            completion_tokens=sum(call["completion_tokens"] for call in calls),
            cost_usd=sum(costs) if costs else None,
            lm_calls=calls,
        )

    def traces(self) -> tuple[dict[str, Any], ...]:
        """Each captured LM call in the order it started: its usage entry plus the messages and the
        completion as DSPy had them (raw: the subscriber bounds and cleans them off the path)."""
        with self._lock:
            calls = [call for call in self._calls.values() if call.messages is not None]
            return tuple(
                {**call.as_dict(), "messages": call.messages, "completion": call.completion} for call in calls
            )

    def _entry(self, model: str, *, priced: bool) -> LMCall:
        """The entry of the LM call running in this context (caller holds the lock).

        Calls to the served LMs were opened by the timer callback under DSPy's call id. An LM built
        elsewhere (inside a program) has no callback and no call id: DSPy prices such a call and
        then reports its tokens, in that order and on the same thread, so both land on one entry.
        """
        call_id = ACTIVE_CALL_ID.get()
        if call_id is not None and call_id in self._calls:
            return self._calls[call_id]
        thread = threading.get_ident()
        pending = self._priced.pop(thread, None)
        if pending is not None and not priced:
            return pending
        call = self._calls[f"untimed-{len(self._calls)}"] = LMCall(model=model)
        if priced:
            self._priced[thread] = call
        return call


def current_usage() -> RequestUsage | None:
    tracker = dspy_settings.usage_tracker
    return tracker if isinstance(tracker, RequestUsage) else None


class LMCallTimer(BaseCallback):
    """Times each LM call of a request. Registered on the served LMs only (see ``LM_CALLBACKS``).

    DSPy's callback machinery costs ~20 us per LM call (a uuid, signature inspection) and ~45 us
    per module call (protocol checks too); a global callback (``dspy.configure(callbacks=...)``)
    would pay that for every module, predictor and adapter step of every request.
    """

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        usage = current_usage()
        if usage is not None:
            model = getattr(instance, "model", type(instance).__name__)
            messages = _prompt_messages(inputs) if usage.capture else None
            usage.lm_started(call_id, model, getattr(instance, ALIAS_ATTR, ""), messages)
            if events.lm_call_started:
                events.lm_call_started.emit(events.LMCallStarted(current_request_id.get(), model, call_id))

    def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        usage = current_usage()
        if usage is None:
            return
        call = usage.lm_finished(call_id, exception, outputs if usage.capture else None)
        if call is not None and events.lm_call_finished:  # tokens and cost are in by now
            events.lm_call_finished.emit(
                events.LMCallFinished(
                    request_id=current_request_id.get(),
                    model=call.model,
                    duration_ms=call.duration_ms,
                    prompt_tokens=call.prompt_tokens,
                    completion_tokens=call.completion_tokens,
                    cost_usd=call.cost_usd,
                    error=call.error,
                    call_id=call_id,
                    response_model=call.response_model,
                )
            )


def _prompt_messages(inputs: dict[str, Any]) -> list[Any]:
    """The messages an LM call sends (``lm(messages=...)``, or ``lm(prompt)`` as one user message)."""
    messages = inputs.get("messages")
    if messages is None:
        messages = [{"role": "user", "content": inputs.get("prompt") or ""}]
    return list(messages)


COST_HOOK = "per-call cost hook"

# One constant list, given to every LM the runtime builds (``programs.lms.build_lm``).
LM_CALLBACKS: list[BaseCallback] = [LMCallTimer()]


def install_cost_hook() -> bool:
    """Make DSPy hand each call's cost to the request's tracker. Idempotent; False if unsupported.

    DSPy prices every call (``CallResult.cost``, from its model metadata; DSPy 3.3: LiteLLM's
    ``response_cost``) but only keeps the figure in ``lm.history``, which a server turns off. The
    hook wraps the step where DSPy reports a finished call's usage to the tracker (3.4's
    ``execution.finalize``, 3.3's ``BaseLM._process_lm_response``: :mod:`programs.dspy_calls`), so
    the cost lands next to the tokens.
    """
    if not dspy_patches.applicable(COST_HOOK, CALLS.cost_relies_on, CALLS.versions):
        return False
    CALLS.install_cost_hook(_report_cost)
    return True


def _report_cost(lm: Any, cost: float | None, cache_hit: bool, answered_by: str) -> None:
    usage = current_usage()
    if usage is not None:
        priced = not cache_hit and not getattr(lm, UNPRICED, False)
        usage.lm_priced(getattr(lm, "model", "unknown"), cost if priced else None, cache_hit, answered_by)
