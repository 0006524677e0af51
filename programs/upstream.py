"""Every upstream request of a served LM: budgets, retries, circuit breaker, fallbacks, prices.

DSPy runs each LM call through ``dspy.clients.execution.execute`` (sync, on a worker thread) or
``aexecute`` (async, on the event loop); DSPy 3.3 through ``dspy.LM.forward``/``aforward``
(LiteLLM): one call of a program's predictor, adapter retry or sub-module is one of them
(:mod:`programs.dspy_calls`). :func:`install` wraps both, so every LM call of a multi-call
program is checked and retried on its own, and the LMs the runtime builds get DSPy's own retries
off (``num_retries=0``): the attempts are this module's, counted and visible.

Per LM call, for the model and then each fallback in turn (:class:`ModelPolicy`):

1. the circuit (:mod:`programs.circuits`): open → :class:`CircuitOpen` without an upstream call;
2. the budget (``rpm``/``tpm``): waits up to ``server.max_queue_ms`` for capacity, then
   :class:`ModelBudgetExceeded`; tokens are reserved (the call's bound: its rendered prompt's
   bytes + ``max_tokens``, :func:`programs.pricing.call_token_bound`) and settled with the billed
   usage after the call;
3. the request's gate (:mod:`programs.lm_gates`, an API key's token and dollar quotas), when the
   request was admitted with one: the same bound, reserved, settled with the billed tokens and cost;
4. the request; a 429, 5xx, timeout or connection failure is retried up to ``num_retries``
   times, after the provider's ``Retry-After`` or an exponential backoff, never past the
   request's deadline. Each failed attempt emits ``events.lm_retry``.

Each answer is priced once, by :func:`programs.pricing.call_cost` (the registry's price, else DSPy's).

What is left when every model failed reaches :func:`programs.execution.classify`: a provider
429 → 503 with ``Retry-After``, an open circuit → 503, the budget → 429, others as before.

Fast path: an LM with no budget, no circuit and no fallbacks, outside a stream and without a
gate, costs an attribute read, DSPy's ``send_stream`` setting, a ``ContextVar.get`` and a ``try``
on success: 1.5 µs per call on a worker thread, 2.9 µs on the event loop (docs/DEPLOYMENT.md).
"""

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dspy.dsp.utils.settings import settings as dspy_settings
from dspy.utils.exceptions import (
    LMError,
    LMRateLimitError,
    LMServerError,
    LMTimeoutError,
    LMTransportError,
    is_retryable_lm_error,
)

from programs import dspy_patches, events
from programs.circuits import ALLOWED, CircuitPermit, CircuitState
from programs.context import current_request_id
from programs.dspy_calls import CALLS
from programs.lm_gates import CallBound, LMCallGate, LMCallRefused, current_lm_gate
from programs.pricing import Prices, billed_tokens, call_cost, call_token_bound
from programs.usage import current_usage

POLICY_ATTR = "served_policy"
# Backoff for faults without a Retry-After: BACKOFF_BASE_S * 2**(attempt-1), with jitter, capped.
BACKOFF_BASE_S = 0.25
BACKOFF_CAP_S = 8.0
# Faults of the upstream itself: they count towards its circuit breaker.
CIRCUIT_FAULTS = (LMServerError, LMTimeoutError, LMTransportError)


class CircuitOpen(LMError):
    """The model's circuit is open: refused without an upstream call."""


class ModelBudgetExceeded(LMError):
    """The model's rpm/tpm budget has no room within ``server.max_queue_ms``."""


class LimitsUnavailable(LMError):
    """The shared limit store is down and the model's limits fail closed."""


# Answers of the server's own guards: no request was sent, nothing to retry on this model.
REFUSALS = (CircuitOpen, ModelBudgetExceeded, LimitsUnavailable, LMCallRefused)


@dataclass(frozen=True, slots=True)
class Grant:
    """A budget's answer: room for the call, or when to try again."""

    allowed: bool
    retry_after_s: float = 0.0
    limit: str = ""  # which limit refused: "rpm" or "tpm"
    handle: Any = None  # the budget's own record of the reservation, to settle it


class ModelBudget(Protocol):
    """The model's rpm/tpm budget, shared by every process that serves it."""

    def reserve(self, tokens: int) -> Grant: ...

    def settle(self, grant: Grant, tokens: int) -> None: ...

    async def areserve(self, tokens: int) -> Grant: ...

    async def asettle(self, grant: Grant, tokens: int) -> None: ...


@dataclass(eq=False)
class ModelPolicy:
    """How calls to one registry alias are made; built at start-up (programs/runtime.py)."""

    alias: str
    lm: Any
    num_retries: int
    prices: Prices | None = None  # programs.pricing.model_prices: the registry's, else DSPy's
    circuit: CircuitState | None = None
    budget: ModelBudget | None = None
    fallbacks: tuple["ModelPolicy", ...] = field(default=())

    @property
    def guarded(self) -> bool:
        """Something is checked before each request (else the fast path runs)."""
        return self.circuit is not None or self.budget is not None or bool(self.fallbacks)


# DSPy's own LM call (programs/dspy_calls.py: 3.4's execute/aexecute, 3.3's LM.forward/aforward).
_original_execute: Callable[[Any, Any], Any] = CALLS.execute
_original_aexecute: Callable[[Any, Any], Awaitable[Any]] = CALLS.aexecute


PATCH = "upstream wrapper"
# What the wrapper replaces and calls (programs/dspy_patches.py), on the DSPy it runs with.
RELIES_ON = CALLS.upstream_relies_on


def install() -> bool:
    """Wrap DSPy's LM call (idempotent) when it is the code the wrapper was written for.

    Unserved LMs run DSPy's as they are. Off (False), DSPy's own calls and retries run, and a program
    whose model has a circuit, a budget or fallbacks fails to load (programs/runtime.py).
    """
    if not dspy_patches.applicable(PATCH, RELIES_ON, CALLS.versions):
        return False
    CALLS.wrap(_execute, _aexecute)
    return True


def attach(policy: ModelPolicy) -> None:
    setattr(policy.lm, POLICY_ATTR, policy)


def policy_of(lm: Any) -> ModelPolicy:
    return getattr(lm, POLICY_ATTR)


# -- one LM call ---------------------------------------------------------------------------------


class _Call:
    """One LM call's progress over its models: attempts, the stream guard, the deadline."""

    __slots__ = ("attempts", "call", "deadline", "gate", "streaming")

    def __init__(self, call: Any, failure: BaseException | None, gate: LMCallGate | None) -> None:
        self.call = call
        self.gate = gate
        self.attempts = 0 if failure is None else 1  # the fast path's failed first attempt
        usage = current_usage()
        self.deadline = usage.deadline if usage is not None else None
        self.streaming = dspy_settings.send_stream is not None

    def prepared_for(self, policy: ModelPolicy, asynchronous: bool) -> Any:
        """The call as DSPy prepares it for a fallback's LM (its model, its client settings)."""
        return CALLS.prepare(policy.lm, self.call, asynchronous)

    def can_fall_back(self, exc: BaseException) -> bool:
        # A typed Request names its model; a stream that already reached the client cannot restart;
        # the caller's own quota refuses every model alike.
        return (
            isinstance(exc, LMError)
            and not isinstance(exc, LMCallRefused)
            and self.call.request is None
            and not getattr(exc, "_emitted", False)
        )

    def retry_wait(self, policy: ModelPolicy, exc: BaseException, attempt: int) -> float | None:
        """Seconds to wait before retrying on the same model, or None: no retry."""
        if attempt > policy.num_retries or not is_retryable_lm_error(exc) or getattr(exc, "_emitted", False):
            return None
        hint = getattr(exc, "retry_after", None)
        if isinstance(exc, LMRateLimitError) and isinstance(hint, int | float) and math.isfinite(hint):
            wait = max(0.0, float(hint))
        else:
            backoff = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
            wait = backoff / 2 + random.random() * backoff / 2  # noqa: S311 - jitter, not a secret
        if self.deadline is not None and time.monotonic() + wait >= self.deadline:
            return None
        return wait

    def failed(self, policy: ModelPolicy, exc: BaseException, attempt: int, wait: float | None) -> None:
        if events.lm_retry:
            events.lm_retry.emit(
                events.LMRetry(
                    request_id=current_request_id.get(),
                    model_alias=policy.alias,
                    attempt=attempt,
                    status=getattr(exc, "status", None),
                    wait_s=wait or 0.0,
                    error_type=type(exc).__name__,
                    retrying=wait is not None,
                )
            )

    def done(self, policy: "ModelPolicy | None") -> None:
        """Book the call: the model that answered it (None: none did), and its attempts."""
        usage = current_usage()
        if usage is not None:
            alias, model = (policy.alias, policy.lm.model) if policy is not None else ("", "")
            usage.lm_routed(alias, model, self.attempts)


def _models(policy: ModelPolicy) -> tuple[ModelPolicy, ...]:
    return (policy, *policy.fallbacks)


def _refused(policy: ModelPolicy, permit: CircuitPermit) -> CircuitOpen:
    wait = permit.retry_after_s
    message = f"the circuit breaker of {policy.alias} is open (retry in {wait:.1f} s)"
    return CircuitOpen(message, model=policy.lm.model, retry_after=wait)


def _over_budget(policy: ModelPolicy, grant: Grant) -> ModelBudgetExceeded:
    message = f"{policy.alias} is over its {grant.limit} budget (room again in {grant.retry_after_s:.1f} s)"
    return ModelBudgetExceeded(message, model=policy.lm.model, retry_after=grant.retry_after_s)


def _bound(policy: ModelPolicy, call: Any) -> CallBound:
    """What this request can bill at most (programs/pricing.py), for ``tpm`` and the gate."""
    prompt, completion = call_token_bound(policy.lm, call)
    cost = policy.prices.cost(prompt, completion) if policy.prices is not None else 0.0
    return CallBound(prompt + completion, cost)


def _used_tokens(result: Any) -> int:
    return sum(billed_tokens(result))


def _price(policy: ModelPolicy, result: Any) -> Any:
    """The call's one price (programs/pricing.py): the registry's when it states one, else DSPy's."""
    if policy.prices is not None and policy.prices.stated:
        CALLS.set_cost(result, call_cost(policy.prices, result))
    return result


def _settlement(result: Any) -> tuple[int, float]:
    """What an answered request billed: its tokens and cost (unpriced: 0.0)."""
    return _used_tokens(result), CALLS.cost(result) or 0.0


def _circuit_changed(policy: ModelPolicy, change: str | None) -> None:
    if change is not None and events.circuit_changed:
        events.circuit_changed.emit(events.CircuitChanged(policy.alias, change))


def _counts_against(permit: CircuitPermit, exc: BaseException) -> bool:
    """Whether a failure counts towards the circuit: an upstream fault, or any failed trial."""
    return permit.trial or isinstance(exc, CIRCUIT_FAULTS)


def _mark_emitted(exc: BaseException, progress: Any) -> None:
    if progress is not None and progress.emitted:
        exc._emitted = True  # type: ignore[attr-defined]


# -- sync: worker threads --------------------------------------------------------------------------


def _execute(lm: Any, call: Any) -> Any:
    policy = getattr(lm, POLICY_ATTR, None)
    if policy is None:
        return _original_execute(lm, call)
    failure = None
    gate = current_lm_gate.get()
    if not policy.guarded and dspy_settings.send_stream is None and gate is None:
        try:
            return _price(policy, _original_execute(lm, call))
        except LMError as exc:
            failure = exc  # retried from here on
    return _run(policy, _Call(call, failure, gate), failure)


def _run(policy: ModelPolicy, run: _Call, failure: BaseException | None) -> Any:
    last: BaseException | None = None
    for model in _models(policy):
        call = run.call if model is policy else run.prepared_for(model, asynchronous=False)
        try:
            result = _on_model(model, call, run, failure if model is policy else None)
        except Exception as exc:
            if not run.can_fall_back(exc):
                run.done(None)
                raise
            last = exc
            continue
        run.done(model)
        return result
    run.done(None)
    assert last is not None
    raise last


def _on_model(policy: ModelPolicy, call: Any, run: _Call, failure: BaseException | None) -> Any:
    """Attempts on one model until one succeeds; else its last failure is raised.

    ``failure``: the first attempt already failed, on the fast path.
    """
    attempt = 0
    while True:
        attempt += 1
        if failure is None:
            try:
                return _once(policy, call, run)
            except REFUSALS:
                raise
            except Exception as exc:  # noqa: BLE001 - retried, or raised below
                failure = exc
        wait = run.retry_wait(policy, failure, attempt)
        run.failed(policy, failure, attempt, wait)
        if wait is None:
            raise failure
        failure = None
        time.sleep(wait)


def _once(policy: ModelPolicy, call: Any, run: _Call) -> Any:
    """One request to the model, if the request's gate, its circuit and its budget let it through."""
    gate = run.gate
    if gate is None:
        return _guarded(policy, call, run)
    bound = _bound(policy, call)
    ticket = gate.reserve(bound)
    try:
        result = _guarded(policy, call, run, bound)
    except Exception:
        gate.settle(ticket, 0, 0.0)  # refused here, or failed upstream: nothing billed
        raise
    gate.settle(ticket, *_settlement(result))
    return result


def _guarded(policy: ModelPolicy, call: Any, run: _Call, bound: CallBound | None = None) -> Any:
    circuit, budget = policy.circuit, policy.budget
    permit = circuit.check() if circuit is not None else ALLOWED
    if not permit.allowed:
        raise _refused(policy, permit)
    if budget is not None and bound is None:
        bound = _bound(policy, call)
    grant = budget.reserve(bound.tokens) if budget is not None else None  # type: ignore[union-attr]
    if grant is not None and not grant.allowed:
        raise _over_budget(policy, grant)
    run.attempts += 1
    try:
        result = _attempt(policy, call, run)
    except Exception as exc:
        if grant is not None:
            budget.settle(grant, 0)  # type: ignore[union-attr]
        if circuit is not None and _counts_against(permit, exc):
            _circuit_changed(policy, circuit.record(permit, False))
        raise
    if grant is not None:
        budget.settle(grant, _used_tokens(result))  # type: ignore[union-attr]
    if circuit is not None:
        _circuit_changed(policy, circuit.record(permit, True))
    return _price(policy, result)


def _attempt(policy: ModelPolicy, call: Any, run: _Call) -> Any:
    if not run.streaming:
        return _original_execute(policy.lm, call)
    with CALLS.fallback_scope() as progress:
        try:
            return _original_execute(policy.lm, call)
        except Exception as exc:
            _mark_emitted(exc, progress)
            raise


# -- async: the event loop (the same steps, awaited) ----------------------------------------------


async def _aexecute(lm: Any, call: Any) -> Any:
    policy = getattr(lm, POLICY_ATTR, None)
    if policy is None:
        return await _original_aexecute(lm, call)
    failure = None
    gate = current_lm_gate.get()
    if not policy.guarded and dspy_settings.send_stream is None and gate is None:
        try:
            return _price(policy, await _original_aexecute(lm, call))
        except LMError as exc:
            failure = exc  # retried from here on
    return await _arun(policy, _Call(call, failure, gate), failure)


async def _arun(policy: ModelPolicy, run: _Call, failure: BaseException | None) -> Any:
    last: BaseException | None = None
    for model in _models(policy):
        call = run.call if model is policy else run.prepared_for(model, asynchronous=True)
        try:
            result = await _aon_model(model, call, run, failure if model is policy else None)
        except Exception as exc:
            if not run.can_fall_back(exc):
                run.done(None)
                raise
            last = exc
            continue
        run.done(model)
        return result
    run.done(None)
    assert last is not None
    raise last


async def _aon_model(policy: ModelPolicy, call: Any, run: _Call, failure: BaseException | None) -> Any:
    attempt = 0
    while True:
        attempt += 1
        if failure is None:
            try:
                return await _aonce(policy, call, run)
            except REFUSALS:
                raise
            except Exception as exc:  # noqa: BLE001 - retried, or raised below
                failure = exc
        wait = run.retry_wait(policy, failure, attempt)
        run.failed(policy, failure, attempt, wait)
        if wait is None:
            raise failure
        failure = None
        await asyncio.sleep(wait)


async def _aonce(policy: ModelPolicy, call: Any, run: _Call) -> Any:
    gate = run.gate
    if gate is None:
        return await _aguarded(policy, call, run)
    bound = _bound(policy, call)
    ticket = await gate.areserve(bound)
    try:
        result = await _aguarded(policy, call, run, bound)
    except Exception:
        await gate.asettle(ticket, 0, 0.0)
        raise
    await gate.asettle(ticket, *_settlement(result))
    return result


async def _aguarded(policy: ModelPolicy, call: Any, run: _Call, bound: CallBound | None = None) -> Any:
    circuit, budget = policy.circuit, policy.budget
    permit = await circuit.acheck() if circuit is not None else ALLOWED
    if not permit.allowed:
        raise _refused(policy, permit)
    if budget is not None and bound is None:
        bound = _bound(policy, call)
    grant = await budget.areserve(bound.tokens) if budget is not None else None  # type: ignore[union-attr]
    if grant is not None and not grant.allowed:
        raise _over_budget(policy, grant)
    run.attempts += 1
    try:
        result = await _aattempt(policy, call, run)
    except Exception as exc:
        if grant is not None:
            await budget.asettle(grant, 0)  # type: ignore[union-attr]
        if circuit is not None and _counts_against(permit, exc):
            _circuit_changed(policy, await circuit.arecord(permit, False))
        raise
    if grant is not None:
        await budget.asettle(grant, _used_tokens(result))  # type: ignore[union-attr]
    if circuit is not None:
        _circuit_changed(policy, await circuit.arecord(permit, True))
    return _price(policy, result)


async def _aattempt(policy: ModelPolicy, call: Any, run: _Call) -> Any:
    if not run.streaming:
        return await _original_aexecute(policy.lm, call)
    with CALLS.fallback_scope() as progress:
        try:
            return await _original_aexecute(policy.lm, call)
        except Exception as exc:
            _mark_emitted(exc, progress)
            raise
