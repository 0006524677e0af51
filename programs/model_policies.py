"""Each registry alias's upstream policy (programs/upstream.py), built from its config entry.

The circuit and the budget are per alias; whether their state is this process's or shared by
every server (Redis) is decided here, once, at start-up.
"""

from typing import Any

from programs.config import ModelEntry
from programs.dspy_calls import UNPRICED
from programs.model_limits import StoreBudget, StoreCircuit
from programs.pricing import model_prices
from programs.upstream import ModelPolicy
from ratelimit import get_store
from ratelimit.failures import FailMode


def build_policy(
    alias: str,
    entry: ModelEntry,
    lm: Any,
    fallbacks: tuple[ModelPolicy, ...],
    max_wait_s: float,
    on_store_error: FailMode,
) -> ModelPolicy:
    """``max_wait_s``: how long a call may wait for budget (``server.max_queue_ms``)."""
    breaker = entry.circuit_breaker
    circuit = None
    if breaker is not None:
        circuit = StoreCircuit(get_store(), alias, breaker.failures, breaker.cooldown_s, on_store_error)
    budget = None
    if entry.rpm is not None or entry.tpm is not None:
        budget = StoreBudget(get_store(), alias, entry.rpm, entry.tpm, max_wait_s, on_store_error)
    return ModelPolicy(
        alias=alias,
        lm=lm,
        num_retries=entry.num_retries,
        prices=model_prices(
            lm.model,
            entry.input_cost_per_1m_tokens,
            entry.output_cost_per_1m_tokens,
            listed=not getattr(lm, UNPRICED, False),
        ),
        circuit=circuit,
        budget=budget,
        fallbacks=fallbacks,
    )
