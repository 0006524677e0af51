"""Fixed prompt parts rendered once: the messages equal DSPy's own ``format``, byte for byte, always."""

import json
from typing import Any, Literal

import dspy
import pydantic
import pytest

from programs.adapters import ServedChatAdapter, ServedJSONAdapter
from programs.prompts import CACHE_LIMIT

Inputs = dict[str, Any]
LM = dspy.LM("openai/prompt-test", api_base="http://127.0.0.1:9/v1", api_key="k", cache=False)


class Verdict(pydantic.BaseModel):
    label: str
    reasons: list[str]


class Review(dspy.Signature):
    """Review the claim against the evidence.

    Be strict:  cite the evidence you used.
    """

    claim: str = dspy.InputField(desc="what is claimed")
    evidence: list[str] = dspy.InputField()
    strictness: int = dspy.InputField(desc="1 to 5", ge=1, le=5)
    verdict: Verdict = dspy.OutputField()
    score: float = dspy.OutputField(desc="confidence", ge=0, le=1)
    kind: Literal["fact", "opinion"] = dspy.OutputField()
    tags: dict[str, int] = dspy.OutputField()


class Chat(dspy.Signature):
    history: dspy.History = dspy.InputField()
    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


REVIEW_DEMOS = [
    dspy.Example(
        claim="water boils at 100 C",
        evidence=["at sea level", "1 atm"],
        strictness=3,
        verdict={"label": "true", "reasons": ["physics"]},
        score=0.9,
        kind="fact",
        tags={"science": 1},
    ),
    {"claim": "cats are best", "evidence": [], "kind": "opinion"},  # incomplete: kept, marked
    {"claim": "no output field at all"},  # dropped by DSPy
]
REVIEW_INPUTS = {"claim": "the moon is cheese", "evidence": ["telescope"], "strictness": 5}


def pairs() -> list[tuple[dspy.Adapter, dspy.Adapter]]:
    """(served adapter, DSPy's own adapter of the same kind)."""
    return [(ServedChatAdapter(LM), dspy.ChatAdapter()), (ServedJSONAdapter(LM), dspy.JSONAdapter())]


def assert_identical(served: list[dict[str, Any]], own: list[dict[str, Any]]) -> None:
    assert json.dumps(served) == json.dumps(own)
    assert served == own


def render(adapter: dspy.Adapter, signature: Any, demos: list[Any], inputs: dict[str, Any]) -> list[Any]:
    return adapter.format(signature, demos, inputs)


def same(served: dspy.Adapter, own: dspy.Adapter, signature: Any, demos: list[Any], inputs: Inputs) -> None:
    """The served adapter's messages are DSPy's own adapter's, for the same arguments."""
    assert_identical(render(served, signature, demos, inputs), render(own, signature, demos, inputs))


@pytest.mark.parametrize(("served", "own"), pairs(), ids=["chat", "json"])
@pytest.mark.parametrize(
    ("signature", "demos", "inputs"),
    [
        (dspy.Predict("question -> answer").signature, [], {"question": "hi"}),
        (
            dspy.Predict("question: str -> answer: str").signature,
            [dspy.Example(question="q1", answer="a1"), {"question": "q2", "answer": "a2"}],
            {"question": "hi"},
        ),
        (Review, [], REVIEW_INPUTS),
        (Review, REVIEW_DEMOS, REVIEW_INPUTS),
    ],
    ids=["plain", "plain-demos", "typed", "typed-demos"],
)
def test_messages_equal_dspys_with_and_without_demos(
    served: dspy.Adapter, own: dspy.Adapter, signature: Any, demos: list[Any], inputs: dict[str, Any]
) -> None:
    same(served, own, signature, demos, inputs)
    same(served, own, signature, demos, inputs)  # from the cache
    same(served, own, signature, demos, {**inputs, next(iter(inputs)): "another question"})


def counted_system_messages(adapter: dspy.Adapter) -> list[Any]:
    calls: list[Any] = []
    original = adapter.format_system_message

    def counting(signature: Any) -> str:
        calls.append(signature)
        return original(signature)

    adapter.format_system_message = counting  # type: ignore[method-assign]
    return calls


@pytest.mark.parametrize(("served", "own"), pairs(), ids=["chat", "json"])
def test_fixed_part_is_rendered_once_per_signature_and_demos(served: dspy.Adapter, own: dspy.Adapter) -> None:
    calls = counted_system_messages(served)
    signature = dspy.Predict("question -> answer").signature
    demos = [dspy.Example(question="q1", answer="a1")]
    for question in ("one", "two", "three"):
        same(served, own, signature, demos, {"question": question})
    assert len(calls) == 1


@pytest.mark.parametrize(("served", "own"), pairs(), ids=["chat", "json"])
def test_changed_demos_and_signatures_are_rendered_again(served: dspy.Adapter, own: dspy.Adapter) -> None:
    predict = dspy.Predict("question -> answer: int")
    predict.demos = [dspy.Example(question="q1", answer=1), {"question": "q2", "answer": 2}]
    inputs = {"question": "hi"}

    def check() -> None:
        same(served, own, predict.signature, predict.demos, inputs)

    check()
    predict.demos[0]["answer"] = 10  # in place
    check()
    predict.demos[1]["answer"] = 1
    check()
    predict.demos[1]["answer"] = True  # equal to 1 (and hashed alike), rendered differently
    check()
    predict.demos[1]["answer"] = 0.0
    check()
    predict.demos[1]["answer"] = -0.0  # equal to 0.0, rendered differently
    check()
    predict.demos.append(dspy.Example(question="q3", answer=3))
    check()
    predict.demos = []
    check()
    predict.signature.instructions = "Answer with a number."  # in place, on the class
    check()
    predict.signature.model_fields["answer"].json_schema_extra["desc"] = "a count"  # in place
    check()
    predict.signature = predict.signature.with_instructions("Count.")
    check()
    state = predict.dump_state()
    state["demos"] = [{"question": "loaded", "answer": 7}]
    predict.load_state(state)
    check()


@pytest.mark.parametrize(("served", "own"), pairs(), ids=["chat", "json"])
def test_callers_get_their_own_messages(served: dspy.Adapter, own: dspy.Adapter) -> None:
    signature = dspy.Predict("question -> answer").signature
    demos = [dspy.Example(question="q1", answer="a1")]
    first = render(served, signature, demos, {"question": "hi"})
    first[0]["content"] = "changed by a caller"
    first[1].clear()
    same(served, own, signature, demos, {"question": "hi"})


@pytest.mark.parametrize(("served", "own"), pairs(), ids=["chat", "json"])
def test_what_cannot_be_keyed_is_rendered_by_dspy(served: dspy.Adapter, own: dspy.Adapter) -> None:
    history = dspy.History(messages=[{"question": "earlier", "answer": "before"}])
    chat_inputs = {"history": history, "question": "now"}
    same(served, own, Chat, [], chat_inputs)
    signature = dspy.Predict("question, picture: dspy.Image -> answer").signature
    demos = [{"question": "q", "picture": dspy.Image("https://example.com/a.png"), "answer": "a"}]
    inputs = {"question": "hi", "picture": dspy.Image("https://example.com/b.png")}
    same(served, own, signature, demos, inputs)
    assert not getattr(served, "_fixed_prompts", {})  # nothing was cached for either


def test_the_cache_stays_bounded() -> None:
    served, own = ServedChatAdapter(LM), dspy.ChatAdapter()
    for index in range(CACHE_LIMIT + 5):
        signature = dspy.Predict(f"question -> answer_{index}").signature
        same(served, own, signature, [], {"question": "q"})
    assert len(served._fixed_prompts) <= CACHE_LIMIT


def test_format_callbacks_run_once_per_format() -> None:
    seen: list[tuple[str, Any]] = []

    class Recorder(dspy.utils.callback.BaseCallback):
        def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            seen.append(("start", inputs["inputs"]))

        def on_adapter_format_end(self, call_id: str, outputs: Any, exception: Exception | None) -> None:
            seen.append(("end", outputs))

    served = ServedJSONAdapter(LM)
    served.callbacks = [Recorder()]
    messages = render(served, dspy.Predict("question -> answer").signature, [], {"question": "hi"})
    assert seen == [("start", {"question": "hi"}), ("end", messages)]
