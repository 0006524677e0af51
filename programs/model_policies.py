"""Each registry alias's upstream policy (programs/upstream.py), built from its config entry.

The circuit and the budget are per alias; whether their state is this process's or shared by
every server (Redis) is decided here, once, at start-up.
"""

from typing import Any

from programs.circuits import CircuitState, LocalCircuit
from programs.config import ModelEntry
from programs.upstream import ModelBudget, ModelPolicy, Prices


def build_policy(
    alias: str, entry: ModelEntry, lm: Any, fallbacks: tuple[ModelPolicy, ...], max_wait_s: float
) -> ModelPolicy:
    return ModelPolicy(
        alias=alias,
        lm=lm,
        num_retries=entry.num_retries,
        prices=_prices(entry),
        circuit=_circuit(alias, entry),
        budget=_budget(alias, entry, max_wait_s),
        fallbacks=fallbacks,
    )


def _prices(entry: ModelEntry) -> Prices | None:
    if entry.input_cost_per_1m_tokens is None and entry.output_cost_per_1m_tokens is None:
        return None
    return Prices(
        input_per_token=(entry.input_cost_per_1m_tokens or 0.0) / 1_000_000,
        output_per_token=(entry.output_cost_per_1m_tokens or 0.0) / 1_000_000,
    )


def _circuit(alias: str, entry: ModelEntry) -> CircuitState | None:
    breaker = entry.circuit_breaker
    if breaker is None:
        return None
    return LocalCircuit(breaker.failures, breaker.cooldown_s)


def _budget(alias: str, entry: ModelEntry, max_wait_s: float) -> ModelBudget | None:
    if entry.rpm is None and entry.tpm is None:
        return None
    return None  # the shared budget comes with the ratelimit store
