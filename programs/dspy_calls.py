"""One LM call as each supported DSPy release makes it: the seam the upstream wrapper and the cost hook use.

DSPy 3.4 runs every LM call through ``dspy.clients.execution`` (its native lm15 engine, LiteLLM as a
fallback backend): ``execute``/``aexecute`` take a prepared call, ``prepare`` builds one for another
LM, ``finalize`` reports its usage, and a ``CallResult`` carries its cost. DSPy 3.3 has none of
that: ``dspy.LM.forward``/``aforward`` send the request through LiteLLM and return LiteLLM's
``ModelResponse`` (its cost in ``_hidden_params["response_cost"]``), and
``BaseLM._process_lm_response`` reports the usage. :data:`CALLS` is the one the running DSPy has,
chosen by what DSPy contains (the module, not the version string); the version and the fingerprints
of what each replaces are still checked by :mod:`programs.dspy_patches` before anything is patched.

Both give the upstream wrapper (:mod:`programs.upstream`) the same four operations on a call object
with ``prompt``, ``messages``, ``kwargs``, ``request`` (a typed request, 3.4 only) and ``legacy``
(the request's fields as sent: messages, max_tokens, response_format, ...), which is all
:func:`programs.pricing.call_token_bound` reads.
"""

import contextlib
import functools
import importlib.util
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)
Execute = Callable[[Any, Any], Any]
AExecute = Callable[[Any, Any], Awaitable[Any]]
# An LM whose calls have no list price (a declared endpoint on DSPy 3.3: programs.lms.declared_lm_class).
UNPRICED = "served_unpriced"
HOOK_MARK = "_telemetry_cost_hook"  # on DSPy's usage step once the cost hook wraps it (installed once)
CostReport = Callable[[Any, float | None, bool, str], None]  # lm, cost, cache hit, the answering model


class NativeCalls:
    """DSPy 3.4: ``dspy.clients.execution`` (lm15 native engine, LiteLLM as its other backend)."""

    versions = frozenset({"3.4.0", "3.4.1"})
    # What the upstream wrapper replaces and calls: the call's fields it reads (prompt, messages,
    # kwargs, request, legacy), the errors it retries, the adapter's fallback scope.
    upstream_relies_on = {
        "dspy.clients.execution.execute": "71ad146e6cbb0b82",
        "dspy.clients.execution.aexecute": "8e7c28f2cb294990",
        "dspy.clients.execution.prepare": "804f2eb813e287a0",
        "dspy.clients.call_context.adapter_fallback_scope": "575df99a78e35c44",
    }
    cost_relies_on = {"dspy.clients.execution.finalize": "26b860f490384b53"}

    def __init__(self) -> None:
        from dspy.clients import execution

        self._execution = execution
        self.execute: Execute = execution.execute
        self.aexecute: AExecute = execution.aexecute

    def wrap(self, execute: Execute, aexecute: AExecute) -> None:
        self._execution.execute = execute
        self._execution.aexecute = aexecute

    def prepare(self, lm: Any, call: Any, asynchronous: bool) -> Any:
        """The call as DSPy prepares it for another LM (its model, its client settings)."""
        return self._execution.prepare(lm, call.prompt, call.messages, call.kwargs, asynchronous=asynchronous)

    def fallback_scope(self) -> contextlib.AbstractContextManager[Any]:
        """DSPy's record of whether a streamed call already sent chunks (``.emitted``)."""
        from dspy.clients.call_context import adapter_fallback_scope

        return adapter_fallback_scope()

    def install_cost_hook(self, report: CostReport) -> None:
        """``finalize`` reports a finished call's usage; the wrapper hands DSPy's cost over first."""
        original = self._execution.finalize
        if getattr(original, HOOK_MARK, False):
            return

        @functools.wraps(original)
        def finalize(lm: Any, call: Any, result: Any) -> Any:
            answered_by = getattr(result, "response_model", None) or ""
            report(lm, getattr(result, "cost", None), bool(getattr(result, "cache_hit", False)), answered_by)
            return original(lm, call, result)

        setattr(finalize, HOOK_MARK, True)
        self._execution.finalize = finalize

    @staticmethod
    def warm_up() -> None:
        """Load the bundled model metadata now, not on the first request."""
        from dspy.clients import model_metadata

        model_metadata.source_info()

    @staticmethod
    def list_price(model: str) -> tuple[float | None, float | None]:
        """USD per prompt and completion token in DSPy's bundled metadata (None: unknown)."""
        from dspy.clients.model_metadata import model_info

        provider, _, name = model.partition("/")
        info = model_info(provider, name) if name else {}
        return info.get("input_cost_per_token"), info.get("output_cost_per_token")

    @staticmethod
    def set_cost(result: Any, cost: float) -> None:
        result.cost = cost

    @staticmethod
    def cost(result: Any) -> float | None:
        return getattr(result, "cost", None)


@dataclass(slots=True)
class LegacyCall:
    """One ``dspy.LM.forward`` call of DSPy 3.3, in the shape the upstream wrapper reads."""

    prompt: str | None
    messages: list[dict[str, Any]] | None
    kwargs: dict[str, Any]
    legacy: dict[str, Any] = field(default_factory=dict)  # what LiteLLM is sent (LM's kwargs merged)
    request: None = None  # DSPy 3.3's LM.forward takes no typed request

    @classmethod
    def of(cls, lm: Any, prompt: str | None, messages: Any, kwargs: dict[str, Any]) -> "LegacyCall":
        sent = {**lm.kwargs, **kwargs, "messages": messages or [{"role": "user", "content": prompt}]}
        return cls(prompt, messages, kwargs, sent)


def _sent_kwargs(lm: Any, call: LegacyCall) -> dict[str, Any]:
    """The call's kwargs, with the LM's ``num_retries`` on a streamed call.

    DSPy 3.3 passes ``num_retries`` to LiteLLM on every path but the streamed one, where LiteLLM's
    own default then retries a 429 after its ``Retry-After`` (a served LM's retries are the upstream
    wrapper's, ``num_retries=0``: a stream's 429 waited past the request's deadline, a 504, not 503).
    """
    from dspy.dsp.utils.settings import settings

    if settings.send_stream is None or "num_retries" in call.kwargs:
        return call.kwargs
    return {**call.kwargs, "num_retries": lm.num_retries}


class _NoProgress:
    """DSPy 3.3 does not say whether a streamed call's chunks reached the client: assume they did."""

    emitted = True


class LiteLLMCalls:
    """DSPy 3.3: ``dspy.LM.forward``/``aforward`` through LiteLLM, one call each."""

    versions = frozenset({"3.3.1"})
    # The wrapper replaces LM.forward/aforward; the legacy call path calls them with
    # (prompt, messages, **kwargs) inside DSPy's callbacks, then reports the usage; the streamed
    # request is sent without num_retries (_sent_kwargs adds it).
    upstream_relies_on = {
        "dspy.clients.lm.LM.forward": "1672344369cb659a",
        "dspy.clients.lm.LM.aforward": "f991b3644e6e08df",
        "dspy.clients.base_lm.BaseLM._legacy_call_direct": "daaba2b574141054",
        "dspy.clients.base_lm.BaseLM._legacy_acall_direct": "3c78509911300877",
        "dspy.clients.lm._get_stream_completion_fn": "ca58fd055fde75a5",
    }
    cost_relies_on = {"dspy.clients.base_lm.BaseLM._process_lm_response": "afa2fc8dd4b1c0bb"}

    def __init__(self) -> None:
        import dspy

        self._lm_class = dspy.LM
        self._forward = dspy.LM.forward
        self._aforward = dspy.LM.aforward

    def execute(self, lm: Any, call: LegacyCall) -> Any:
        return self._forward(lm, prompt=call.prompt, messages=call.messages, **_sent_kwargs(lm, call))

    async def aexecute(self, lm: Any, call: LegacyCall) -> Any:
        return await self._aforward(lm, prompt=call.prompt, messages=call.messages, **_sent_kwargs(lm, call))

    def wrap(self, execute: Execute, aexecute: AExecute) -> None:
        def forward(lm: Any, prompt: str | None = None, messages: Any = None, **kwargs: Any) -> Any:
            return execute(lm, LegacyCall.of(lm, prompt, messages, kwargs))

        async def aforward(lm: Any, prompt: str | None = None, messages: Any = None, **kwargs: Any) -> Any:
            return await aexecute(lm, LegacyCall.of(lm, prompt, messages, kwargs))

        self._lm_class.forward = functools.wraps(self._forward)(forward)
        self._lm_class.aforward = functools.wraps(self._aforward)(aforward)

    @staticmethod
    def prepare(lm: Any, call: LegacyCall, asynchronous: bool) -> LegacyCall:
        """The same call for another LM: ``forward`` merges that LM's own settings."""
        return LegacyCall.of(lm, call.prompt, call.messages, call.kwargs)

    @staticmethod
    @contextlib.contextmanager
    def fallback_scope() -> Iterator[_NoProgress]:
        """A failed stream may have sent chunks already: it is never retried (never a mixed answer)."""
        yield _NoProgress()

    def install_cost_hook(self, report: CostReport) -> None:
        """``_process_lm_response`` reports a finished call's usage; hand LiteLLM's cost over first."""
        from dspy.clients.base_lm import BaseLM

        original = BaseLM._process_lm_response
        if getattr(original, HOOK_MARK, False):
            return

        @functools.wraps(original)
        def process(lm: Any, response: Any, prompt: Any, messages: Any, **kwargs: Any) -> Any:
            cache_hit = bool(getattr(response, "cache_hit", False))
            report(lm, self.cost(response), cache_hit, getattr(response, "model", None) or "")
            return original(lm, response, prompt, messages, **kwargs)

        setattr(process, HOOK_MARK, True)
        BaseLM._process_lm_response = process

    @staticmethod
    def warm_up() -> None:
        """Import LiteLLM and what its first completion imports (2.6 s of the first request's 3.3 s
        here), with a ``mock_response`` completion: no request leaves the process."""
        from dspy.clients._litellm import get_litellm

        try:
            messages = [{"role": "user", "content": "-"}]
            get_litellm(feature="dspy.LM").completion(
                model="openai/warm-up", messages=messages, mock_response="-", api_key="-"
            )
        except Exception:  # only a head start: the first request pays for it instead
            logger.warning("LiteLLM warm-up failed: the first request imports what it needs", exc_info=True)

    @staticmethod
    def list_price(model: str) -> tuple[float | None, float | None]:
        """USD per prompt and completion token in LiteLLM's bundled cost map (None: unknown)."""
        from dspy.clients._litellm import get_litellm

        try:
            info = get_litellm(feature="pricing").get_model_info(model)
        except Exception:  # noqa: BLE001 - LiteLLM raises a bare Exception for a model it does not know
            return None, None
        return info.get("input_cost_per_token"), info.get("output_cost_per_token")

    @staticmethod
    def set_cost(result: Any, cost: float) -> None:
        result._hidden_params["response_cost"] = cost

    @staticmethod
    def cost(result: Any) -> float | None:
        hidden = getattr(result, "_hidden_params", None) or {}
        return hidden.get("response_cost")


def native_engine() -> bool:
    """Whether this DSPy runs LM calls through ``dspy.clients.execution`` (3.4) or not (3.3)."""
    return importlib.util.find_spec("dspy.clients.execution") is not None


CALLS: NativeCalls | LiteLLMCalls = NativeCalls() if native_engine() else LiteLLMCalls()
