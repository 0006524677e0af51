"""One price, one token bound (programs/pricing.py) and the per-LM-call gate (programs/lm_gates.py)
as programs/upstream.py applies them, with DSPy's request replaced by a stub; the key's gate
(apikeys/token_reservations.py) on the in-process store."""

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from apikeys.context import Caller, Quota
from apikeys.token_reservations import KeyQuotaGate, bind, gate_for
from programs import upstream
from programs.dspy_calls import CALLS, NativeCalls
from programs.lm_gates import CallBound, LMCallRefused, current_lm_gate
from programs.pricing import Prices, call_cost, call_token_bound, model_prices
from ratelimit.backends.memory import MemoryStore

BILLED = {"prompt_tokens": 30, "completion_tokens": 20}


def answer(usage: dict[str, int], cost: float | None, cache_hit: bool = False) -> SimpleNamespace:
    """An answered call as the running DSPy returns it: 3.4's CallResult, 3.3's LiteLLM response."""
    if isinstance(CALLS, NativeCalls):
        return SimpleNamespace(usage=usage, cost=cost, cache_hit=cache_hit)
    return SimpleNamespace(usage=usage, _hidden_params={"response_cost": cost}, cache_hit=cache_hit)


class Upstream:
    """Stands for DSPy's execute: counts the requests, answers with BILLED usage."""

    def __init__(self) -> None:
        self.requests = 0

    def result(self) -> SimpleNamespace:
        self.requests += 1
        return answer(dict(BILLED), None)


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Upstream]]:
    stub = Upstream()

    async def aexecute(lm: Any, call: Any) -> Any:
        return stub.result()

    monkeypatch.setattr(upstream, "_original_execute", lambda lm, call: stub.result())
    monkeypatch.setattr(upstream, "_original_aexecute", aexecute)
    lm = SimpleNamespace(model="openai/m", kwargs={"max_tokens": 50})
    upstream.attach(upstream.ModelPolicy(alias="m", lm=lm, num_retries=0, prices=Prices(1e-6, 2e-6)))
    yield lm, stub


def _call(text: str = "x" * 200) -> SimpleNamespace:
    messages = [{"role": "system", "content": "é" * 100}, {"role": "user", "content": text}]
    return SimpleNamespace(request=None, prompt=None, legacy={"messages": messages, "max_tokens": 50})


def test_the_bound_counts_utf8_bytes_the_template_and_max_tokens_times_n() -> None:
    call = _call()
    prompt, completion = call_token_bound(SimpleNamespace(kwargs={}), call)
    assert (prompt, completion) == (200 + 200 + 2 * 8 + 8, 50)  # "é" is two bytes
    call.legacy["n"] = 3
    assert call_token_bound(SimpleNamespace(kwargs={}), call) == (3 * prompt, 3 * 50)


def test_the_registry_price_wins_then_dspys_then_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # DSPy's bundled prices, no network
    answered = answer(dict(BILLED), 0.5)
    assert call_cost(Prices(1e-6, 2e-6), answered) == pytest.approx(30e-6 + 40e-6)
    assert call_cost(Prices(1e-6, 2e-6, stated=False), answered) == 0.5  # DSPy's own estimate
    assert call_cost(None, answered) == 0.5
    assert call_cost(Prices(1e-6, 2e-6), answer({}, None, cache_hit=True)) is None
    assert model_prices("openai/gpt-4o-mini", 1.0, 2.0) == Prices(1e-6, 2e-6)
    listed = model_prices("openai/gpt-4o-mini", None, None)
    assert listed is not None and not listed.stated and listed.input_per_token > 0
    assert model_prices("openai/no-such-model-here", None, None) is None


def test_each_lm_call_reserves_its_bound_and_settles_what_was_billed(model: tuple[Any, Upstream]) -> None:
    lm, stub = model
    store = MemoryStore()
    bound = sum(call_token_bound(lm, _call()))
    gate = KeyQuotaGate(store, 7, tokens_per_day=bound + 50, budget_usd=None)
    token = current_lm_gate.set(gate)
    try:
        result = upstream._execute(lm, _call())  # fits: bound <= quota, settled to the 50 billed
        assert CALLS.cost(result) == pytest.approx(30e-6 + 40e-6)
        # Room for exactly one more bound (on the event loop), then not for a larger one.
        asyncio.run(upstream._aexecute(lm, _call()))
        with pytest.raises(LMCallRefused) as refused:
            upstream._execute(lm, _call("y" * 400))
    finally:
        current_lm_gate.reset(token)
    assert stub.requests == 2  # the refused call never reached the model
    assert refused.value.status == 429 and refused.value.retry_after >= 1
    assert f"{bound + 50} tokens per 24 hours" in refused.value.message
    assert store.take("key:7:tokens", 0, 10**9, 86400).remaining == 10**9 - 100


def test_dollars_are_reserved_at_the_models_price(model: tuple[Any, Upstream]) -> None:
    lm, _ = model
    prompt, completion = call_token_bound(lm, _call())
    gate = KeyQuotaGate(MemoryStore(), 8, tokens_per_day=None, budget_usd=1.0)
    ticket = gate.reserve(CallBound(prompt + completion, Prices(1e-6, 2e-6).cost(prompt, completion)))
    gate.settle(ticket, 50, 70e-6)
    assert gate.store.take("key:8:usd", 0, 1.0, 86400 * 30).remaining == pytest.approx(1.0 - 70e-6)


def test_without_a_gate_the_fast_path_runs_and_keys_without_token_quotas_bind_none(
    model: tuple[Any, Upstream],
) -> None:
    lm, stub = model
    assert current_lm_gate.get() is None
    assert CALLS.cost(upstream._execute(lm, _call())) == pytest.approx(70e-6)
    assert stub.requests == 1
    assert gate_for(Caller(1, "rpm only", quota=Quota(rpm=5))) is None
    assert gate_for(None) is None
    token = bind(Caller(2, "tokens", quota=Quota(tokens_per_day=10)))
    try:
        assert isinstance(current_lm_gate.get(), KeyQuotaGate)
    finally:
        current_lm_gate.reset(token)
