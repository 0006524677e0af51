"""DSPy set-up, done once per process: global settings, one shared ``dspy.LM`` per model alias.

Requests never call ``dspy.configure``; they apply their program's LM and adapter with
``dspy.context`` (see :mod:`programs.execution`).
"""

import functools
import logging
import os
import re
from pathlib import Path
from typing import Any

import dspy

from programs import dspy_patches, dspy_speedups, upstream
from programs import usage as lm_usage
from programs.config import DeclaredModel, ModelEntry, resolve_api_key
from programs.dspy_calls import CALLS, UNPRICED, NativeCalls

logger = logging.getLogger(__name__)


def configure_dspy(max_connections: int) -> None:
    """Process-wide DSPy settings: no history, no global trace, metadata without network.

    DSPy keeps up to 10,000 history and trace entries per process (other users' prompts included),
    and fetches model metadata over the network (5 s timeout) on first use. A server needs
    neither. Its native engine also caps a process at 100 upstream connections per LM; the cap is
    raised to ``max_connections`` so it never binds before the server's own limits do.
    """
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    dspy.configure(disable_history=True, trace=None)
    if dspy_patches.applicable(CONNECTION_CAP, {"dspy.clients.execution.RouterConfig": "2b16e0f9ecfba802"}):
        _raise_connection_cap(max_connections)
    dspy_speedups.install()
    lm_usage.install_cost_hook()  # per-call cost into the request's usage tracker (history is off)
    upstream.install()  # budgets, retries, circuit breakers and fallbacks around each LM call
    logger.info(dspy_patches.summary())
    CALLS.warm_up()  # what the first LM call would load (DSPy's metadata; 3.3: LiteLLM's modules)


CONNECTION_CAP = "upstream connection cap"

# Set for each program or each call by the runtime and programs.execution, never taken from the
# global configuration.
CALL_SETTINGS = frozenset({"lm", "adapter", "trace", "track_usage", "usage_tracker", "caller_predict",
                           "caller_modules", "send_stream", "stream_listeners"})  # fmt: skip


def settings_snapshot() -> dict[str, Any]:
    """DSPy's settings as start-up left them, for every call to apply (see programs.execution).

    Requests never read DSPy's global configuration: a later ``dspy.configure`` (which the first
    async task to call it may do) or an in-place change of a global list
    (``dspy.settings.callbacks.append(...)``, from any thread) cannot change what a served program
    sends. Lists and dicts are copied, so the global objects are never shared with a request.
    """
    return {
        key: value.copy() if isinstance(value, list | dict) else value
        for key, value in dspy.settings.config.items()
        if key not in CALL_SETTINGS
    }


def _raise_connection_cap(max_connections: int) -> None:
    """DSPy builds its native engine's ``RouterConfig`` without ``max_connections``: supply it."""
    from dspy.clients import execution as dspy_execution

    original = getattr(dspy_execution.RouterConfig, "func", dspy_execution.RouterConfig)
    dspy_execution.RouterConfig = functools.partial(original, max_connections=max_connections)


def build_lm(
    alias: str, entry: ModelEntry, config_path: Path, timeout_s: float, declared: DeclaredModel | None
) -> dspy.LM:
    """One LM per alias, shared by every program and request that uses it.

    The LM's HTTP timeout is the longest request timeout of its programs, so a sync program whose
    request already timed out does not keep its worker thread much longer than that.
    """
    lm_class: type[dspy.LM] = dspy.LM
    if declared is None:
        model = entry.model
    elif isinstance(CALLS, NativeCalls):
        model = declare_endpoint(alias, entry, declared)
    else:
        model, lm_class = entry.model, declared_lm_class(declared)
    kwargs = entry.lm_kwargs()
    if entry.api_base:
        kwargs["api_base"] = entry.api_base
    api_key = resolve_api_key(alias, entry, config_path)
    if api_key is not None:
        kwargs["api_key"] = api_key
    kwargs.setdefault("timeout", timeout_s)
    lm = lm_class(
        model,
        model_type=entry.model_type,
        temperature=entry.temperature,
        max_tokens=entry.max_tokens,
        cache=entry.cache,
        # The server retries (programs/upstream.py): each attempt counted and visible; DSPy does without it.
        num_retries=0 if dspy_patches.active(upstream.PATCH) else entry.num_retries,
        callbacks=lm_usage.LM_CALLBACKS,  # times each call for the request's telemetry record
        **kwargs,
    )
    setattr(lm, lm_usage.ALIAS_ATTR, alias)
    how = f"declared as {model}" if declared is not None else "capabilities and prices from DSPy's metadata"
    logger.info("Model %s: %s via %s engine (%s)", alias, entry.model, engine_name(lm), how)
    return lm


def declare_endpoint(alias: str, entry: ModelEntry, declared: DeclaredModel) -> str:
    """Register the alias's endpoint as a provider of DSPy's native engine; returns the model string.

    DSPy then takes the model's capabilities from the config instead of its metadata, and prices
    nothing (a provider with no metadata namespaces). Speed is the same either way: whatever DSPy
    looks up per call is looked up once per model (:mod:`programs.dspy_speedups`).
    """
    from dspy.lm15 import AccessPolicy, ModelSupport, OpenAIChatCompat, ProviderDefinition, register_provider

    provider = "served-" + re.sub(r"[^a-z0-9]+", "-", alias.lower()).strip("-")
    definition = ProviderDefinition.chat(
        AccessPolicy(provider=provider, base_url=entry.api_base), compat=OpenAIChatCompat()
    )
    supports = ModelSupport(
        response_schema=declared.response_schema,
        function_calling=declared.function_calling,
        reasoning=declared.reasoning,
    )
    register_provider(definition, supports=supports)
    return f"{provider}/{entry.model.split('/', 1)[-1]}"


def declared_lm_class(declared: DeclaredModel) -> type[dspy.LM]:
    """DSPy 3.3 (LiteLLM only): an LM whose capabilities are the declared ones, and unpriced.

    What :func:`declare_endpoint` does on 3.4's native engine: the adapters ask the LM what the
    endpoint supports (not LiteLLM's table, which knows the model name, not the server behind
    ``api_base``; unknown counts as unsupported), and no list price is put on a self-hosted model.
    """

    class DeclaredLM(dspy.LM):
        supports_response_schema = bool(declared.response_schema)
        supports_function_calling = bool(declared.function_calling)
        supports_reasoning = bool(declared.reasoning)

    setattr(DeclaredLM, UNPRICED, True)
    return DeclaredLM


def engine_name(lm: dspy.LM) -> str:
    """'native' (DSPy's lm15 engine) or 'litellm'. LiteLLM costs 4-5 ms more CPU per call."""
    if not isinstance(CALLS, NativeCalls):
        return "litellm"  # DSPy 3.3: LiteLLM is its only engine
    from dspy.clients.backend_selection import select_backend

    try:
        native = select_backend(lm).native
    except Exception:  # noqa: BLE001 - selection problems surface on the first call instead
        native = False
    if not native:
        logger.warning(
            "Model %s runs on DSPy's LiteLLM engine (slower). Causes: a %s_API_BASE variable, client "
            "options other than api_key/api_base/timeout, or a model DSPy's native engine does not know.",
            lm.model,
            lm.model.split("/", 1)[0].upper(),
        )
    return "native" if native else "litellm"
