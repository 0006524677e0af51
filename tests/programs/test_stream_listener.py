"""The served stream listener lets through exactly what DSPy 3.4.1's own listener does, chunk by
chunk, for the chat and JSON adapters (its cost per chunk is measured by loadtest/stream_cost.py)."""

from types import SimpleNamespace
from typing import Any

import dspy
import pytest
from dspy.streaming import StreamListener

from programs.streaming import ServedStreamListener


def chunk(text: str) -> Any:
    return SimpleNamespace(choices=[SimpleNamespace(delta=SimpleNamespace(content=text))])


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def heard(listener_class: type[StreamListener], adapter: dspy.Adapter, stream: list[str]) -> list[Any]:
    predict = dspy.Predict("question -> answer, note")
    listener = listener_class("answer", predict=predict, predict_name="predict", allow_reuse=True)
    out = []
    with dspy.context(adapter=adapter):
        for text in stream:
            response = listener.receive(chunk(text))
            if response is not None:
                out.append((response.chunk, response.is_last_chunk))
        rest = listener.finalize()
        if rest is not None:
            out.append((rest.chunk, rest.is_last_chunk))
    return out


ANSWER = 'He said "hi", then {left} a note: [[ not a marker ]] ' + "x" * 300
CHAT = f"[[ ## answer ## ]]\n{ANSWER}\n\n[[ ## note ## ]]\nn\n\n[[ ## completed ## ]]"
JSON = '{"answer": "' + ANSWER.replace('"', '\\"') + '", "note": "n"}'
JSON_LAST = '{"note": "n", "answer": "' + ANSWER.replace('"', '\\"') + '"}'


@pytest.mark.parametrize(
    ("adapter", "text"),
    [(dspy.ChatAdapter(), CHAT), (dspy.JSONAdapter(), JSON), (dspy.JSONAdapter(), JSON_LAST)],
)
@pytest.mark.parametrize("size", [1, 3, 20, 1000])
def test_the_same_chunks_as_dspys_listener(adapter: dspy.Adapter, text: str, size: int) -> None:
    stream = pieces(text, size)
    served = heard(ServedStreamListener, adapter, stream)
    assert served == heard(StreamListener, adapter, stream)
    assert served or size == 1000  # one chunk holding the whole answer: DSPy streams nothing


def test_a_reused_listener_starts_each_stream_afresh() -> None:
    adapter = dspy.JSONAdapter()
    predict = dspy.Predict("question -> answer, note")
    listeners = [
        cls("answer", predict=predict, allow_reuse=True) for cls in (ServedStreamListener, StreamListener)
    ]
    for _ in range(2):  # a predictor called twice in one request (a ReAct loop, Refine)
        outputs = []
        for listener in listeners:
            with dspy.context(adapter=adapter):
                out = [listener.receive(chunk(text)) for text in pieces(JSON, 7)]
            outputs.append([(r.chunk, r.is_last_chunk) for r in out if r is not None])
        assert outputs[0] == outputs[1]
