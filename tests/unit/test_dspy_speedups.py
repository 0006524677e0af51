"""The DSPy speedups: inline only what is allowed, cached answers equal DSPy's own."""

import asyncio
import threading

import dspy
import pytest
from dspy.adapters import utils as adapter_utils
from dspy.clients import backend_selection, capabilities, execution

from programs import dspy_speedups
from programs.lms import configure_dspy, engine_name


def setup_module() -> None:
    configure_dspy(max_connections=1024)


def test_installed_on_the_measured_version() -> None:
    assert dspy.__version__ == dspy_speedups.PATCHED_DSPY_VERSION
    assert asyncio.to_thread is dspy_speedups._to_thread
    assert execution.select_backend is dspy_speedups._select_backend
    assert capabilities.select_backend is dspy_speedups._select_backend
    assert capabilities.resolve is dspy_speedups._resolve


def prepare() -> str:
    """Named like DSPy's step, but defined outside DSPy: must never be inlined."""
    return threading.current_thread().name


async def thread_of(func: object, inline: bool) -> str:
    token = dspy_speedups.inline_lm_steps.set(inline)
    try:
        return await asyncio.to_thread(func)  # type: ignore[arg-type]
    finally:
        dspy_speedups.inline_lm_steps.reset(token)


def test_only_dspy_steps_run_inline_and_only_when_asked() -> None:
    async def scenario() -> tuple[str, str, str, str]:
        loop_thread = threading.current_thread().name
        dspy_step = execution.prepare
        original_name = dspy_step.__qualname__
        assert original_name in dspy_speedups.INLINE_STEPS

        def fake_step() -> str:
            return threading.current_thread().name

        fake_step.__module__ = "dspy.clients.execution"
        fake_step.__qualname__ = "prepare"
        return (
            loop_thread,
            await thread_of(fake_step, inline=True),
            await thread_of(fake_step, inline=False),
            await thread_of(prepare, inline=True),
        )

    loop_thread, inlined, not_asked, not_dspy = asyncio.run(scenario())
    assert inlined == loop_thread
    assert not_asked != loop_thread
    assert not_dspy != loop_thread


def test_cached_backend_selection_matches_dspy() -> None:
    lm = dspy.LM("openai/some-model", api_base="http://127.0.0.1:9/v1", api_key="k", cache=False)
    fresh = dspy_speedups._original_select_backend(lm, {"temperature": 0.5})
    first = execution.select_backend(lm, {"temperature": 0.5})
    second = execution.select_backend(lm, {"temperature": 0.9})  # not a client key: same answer
    assert first == fresh
    assert second == fresh
    first.clients["api_key"] = "changed by a caller"
    assert execution.select_backend(lm, None).clients["api_key"] == "k"


def test_cache_tells_client_settings_apart() -> None:
    lm = dspy.LM("openai/some-model", api_base="http://127.0.0.1:9/v1", api_key="k", cache=False)
    plain = execution.select_backend(lm, {})
    with_headers = execution.select_backend(lm, {"extra_headers": {"x": "1"}})
    assert plain.native is True
    assert with_headers.native is False  # DSPy sends extra headers through LiteLLM
    assert with_headers == backend_selection.select_backend(lm, {"extra_headers": {"x": "1"}})


def test_resolution_cached_per_lm_configuration() -> None:
    lm = dspy.LM("openai/some-model", api_base="http://127.0.0.1:9/v1", api_key="k", cache=False)
    other = dspy.LM("openai/other-model", api_base="http://127.0.0.1:9/v1", api_key="k", cache=False)
    assert capabilities.resolve(lm) == dspy_speedups._original_resolve(lm)
    assert capabilities.resolve(lm) is capabilities.resolve(lm)
    assert capabilities.resolve(other).model == "other-model"


def test_type_adapters_are_reused_and_behave_the_same() -> None:
    assert adapter_utils.TypeAdapter(list[int]) is adapter_utils.TypeAdapter(list[int])
    assert adapter_utils.serialize_for_json({"a": (1, 2)}) == {"a": [1, 2]}
    assert adapter_utils.TypeAdapter(list[int]).validate_python(["1"]) == [1]


def test_lms_bound_to_declared_providers_are_cached_too() -> None:
    from programs.config import DeclaredModel, ModelEntry
    from programs.lms import declare_endpoint

    entry = ModelEntry(model="openai/declared-model", api_base="http://127.0.0.1:9/v1", api_key="k")
    model = declare_endpoint("speedup-test", entry, DeclaredModel(response_schema=False))
    lm = dspy.LM(model, api_base="http://127.0.0.1:9/v1", api_key="k", cache=False)
    assert lm._providers
    assert capabilities.resolve(lm) is capabilities.resolve(lm)
    assert capabilities.resolve(lm).declared
    assert execution.select_backend(lm, {}) == dspy_speedups._original_select_backend(lm, {})


def test_gateway_variable_still_switches_to_litellm(monkeypatch: pytest.MonkeyPatch) -> None:
    lm = dspy.LM("openai/gateway-model", api_key="k", cache=False)
    assert engine_name(lm) == "native"
    monkeypatch.setenv("OPENAI_API_BASE", "http://127.0.0.1:9/v1")
    assert engine_name(lm) == "litellm"
