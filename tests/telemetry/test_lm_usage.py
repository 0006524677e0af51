"""Per-request LM usage from DSPy's own hooks, against the mock LLM (no ``lm.history``)."""

import asyncio
from pathlib import Path
from typing import Any

import dspy
import pytest
from asgiref.sync import sync_to_async

from programs.usage import LM_CALLBACKS, RequestUsage, install_cost_hook
from tests.support import Running
from tests.telemetry.conftest import COMPLETION_PRICE, PROMPT_PRICE

pytestmark = pytest.mark.integration


def make_lm(llm: Running, model: str = "openai/mock-model", callbacks: Any = LM_CALLBACKS) -> dspy.LM:
    base = f"{llm.url}/v1"
    return dspy.LM(model, api_base=base, api_key="k", cache=False, num_retries=0, callbacks=callbacks)


@pytest.fixture(autouse=True)
def cost_hook() -> None:
    assert install_cost_hook()


def run(lm: dspy.LM, question: str, usage: RequestUsage, program: Any = None) -> Any:
    predict = program or dspy.Predict("question -> answer")
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter(), track_usage=True, usage_tracker=usage):
        return predict(question=question)


def test_one_call_has_its_tokens_duration_and_model(llm: Running) -> None:
    usage = RequestUsage()
    run(make_lm(llm), "q [usage=17,5]", usage)
    snapshot = usage.snapshot()
    assert (snapshot.prompt_tokens, snapshot.completion_tokens, snapshot.total_tokens) == (17, 5, 22)
    (call,) = snapshot.lm_calls
    assert call["model"] == "openai/mock-model"
    assert (call["prompt_tokens"], call["completion_tokens"]) == (17, 5)
    assert call["duration_ms"] is not None and call["duration_ms"] > 0
    assert call["error"] is None
    assert call["cost_usd"] is None and snapshot.cost_usd is None  # no price known: unknown, not 0


def test_cost_is_dspys_price_for_that_call(llm: Running) -> None:
    usage = RequestUsage()
    run(make_lm(llm, "openai/gpt-4o-mini"), "q [usage=1000,500]", usage)
    snapshot = usage.snapshot()
    assert snapshot.cost_usd == pytest.approx(1000 * PROMPT_PRICE + 500 * COMPLETION_PRICE)
    assert snapshot.lm_calls[0]["cost_usd"] == pytest.approx(snapshot.cost_usd)


def test_concurrent_requests_never_see_each_others_usage(llm: Running) -> None:
    """Async calls on one loop and sync calls in threads, interleaved: each tracker its own numbers."""
    lm = make_lm(llm)
    predict = dspy.Predict("question -> answer")

    async def one(index: int) -> tuple[int, RequestUsage]:
        usage = RequestUsage()
        question = f"#{index} [usage={index + 1},{2 * index + 1}] [delay=20]"
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter(), track_usage=True, usage_tracker=usage):
            if index % 2:
                await predict.acall(question=question)
            else:
                await sync_to_async(predict, thread_sensitive=False)(question=question)
        return index, usage

    async def scenario() -> list[tuple[int, RequestUsage]]:
        return await asyncio.gather(*(one(i) for i in range(60)))

    for index, usage in asyncio.run(scenario()):
        snapshot = usage.snapshot()
        assert (snapshot.prompt_tokens, snapshot.completion_tokens) == (index + 1, 2 * index + 1), index
        assert len(snapshot.lm_calls) == 1


def test_failed_call_is_in_the_breakdown_with_its_error(llm: Running) -> None:
    usage = RequestUsage()
    with pytest.raises(Exception, match="mock upstream failure"):
        run(make_lm(llm), "q [fault=500]", usage)
    (call,) = usage.snapshot().lm_calls
    assert call["error"] == "LMServerError"
    assert call["prompt_tokens"] == 0


def test_parallel_branches_count_for_the_request(llm: Running) -> None:
    """dspy.Parallel deep-copies the tracker per thread and drops the copies; this one is shared."""
    lm = make_lm(llm)
    predict = dspy.Predict("question -> answer")
    usage = RequestUsage()
    examples = [dspy.Example(question=f"p{i} [usage=10,{i}]").with_inputs("question") for i in range(4)]
    pairs = [(predict, example) for example in examples]
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter(), track_usage=True, usage_tracker=usage):
        dspy.Parallel(num_threads=4)(pairs)
    snapshot = usage.snapshot()
    assert len(snapshot.lm_calls) == 4
    assert (snapshot.prompt_tokens, snapshot.completion_tokens) == (40, 0 + 1 + 2 + 3)


def test_lm_without_the_timer_still_reports_tokens_and_cost_on_one_entry(llm: Running) -> None:
    """An LM built inside a program (not by the runtime) has no callback: no duration, nothing lost."""
    usage = RequestUsage()
    run(make_lm(llm, "openai/gpt-4o-mini", callbacks=None), "q [usage=100,10]", usage)
    (call,) = usage.snapshot().lm_calls
    assert (call["prompt_tokens"], call["completion_tokens"]) == (100, 10)
    assert call["cost_usd"] == pytest.approx(100 * PROMPT_PRICE + 10 * COMPLETION_PRICE)
    assert call["duration_ms"] is None


def test_a_declared_endpoint_has_its_declared_capabilities_and_no_list_price(
    llm: Running, tmp_path: Path
) -> None:
    """A self-hosted model behind ``api_base`` that keeps a hosted name is not billed at that name's
    list price, and the adapters see what the operator declared, on either engine (DSPy 3.4's
    declared provider, 3.3's declared LM class)."""
    from programs.config import DeclaredModel, ModelEntry
    from programs.lms import build_lm
    from programs.model_policies import build_policy

    entry = ModelEntry(model="openai/gpt-4o-mini", api_base=f"{llm.url}/v1", api_key="k", cache=False)
    declared = DeclaredModel(response_schema=False, function_calling=True)
    lm = build_lm("self-hosted", entry, tmp_path / "dspy.config.yaml", 10.0, declared)
    assert (lm.supports_response_schema, lm.supports_function_calling) == (False, True)
    usage = RequestUsage()
    run(lm, "q [usage=1000,500]", usage)
    (call,) = usage.snapshot().lm_calls
    assert (call["prompt_tokens"], call["completion_tokens"]) == (1000, 500)
    assert call["cost_usd"] is None  # gpt-4o-mini's list price would be 0.00045
    assert build_policy("self-hosted", entry, lm, (), 0.0, "fail_open").prices is None  # nor reserved at it
