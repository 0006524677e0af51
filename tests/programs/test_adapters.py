"""Structured outputs by capability: the adapter is the program's choice, the response format the
model entry's declared capability (DSPy's own lookup for undeclared models).

One program (two typed outputs) is served under several names (tests/programs/conftest.py):
the chat adapter, and the JSON adapter on models that do or do not take a JSON schema. Each must
answer correctly through the mock, which honours ``response_format``; the request the mock
receives carries a schema only when the model entry says it can.
"""

from typing import Any

import pytest

from programs.config import ConfigError, load_config
from tests.programs.conftest import post, received, reset
from tests.support import Running

JSON_PROMPT = "Outputs will be a JSON object with the following fields."
CHAT_PROMPT = "[[ ## answer ## ]]"

CASES = [  # program, adapter's prompt, response_format type the mock must receive
    ("Structured", CHAT_PROMPT, None),  # chat adapter (default): no response_format at all
    ("StructuredJson", JSON_PROMPT, "json_schema"),  # declared response_schema: true
    ("StructuredJsonObject", JSON_PROMPT, "json_object"),  # same model, native_structured_outputs: false
    (
        "StructuredJsonNoSchema",
        JSON_PROMPT,
        None,
    ),  # declared response_schema: false: JSON asked in the prompt
    ("StructuredJsonUndeclared", JSON_PROMPT, None),  # undeclared, unknown to DSPy's metadata
    ("StructuredJsonKnown", JSON_PROMPT, "json_schema"),  # undeclared openai/gpt-4o-mini: DSPy's metadata
]


def _system(body: dict[str, Any]) -> str:
    return next(message["content"] for message in body["messages"] if message["role"] == "system")


@pytest.mark.integration
@pytest.mark.parametrize(("program", "prompt", "response_format"), CASES, ids=[case[0] for case in CASES])
def test_each_adapter_answers_and_asks_for_a_schema_only_when_the_model_can(
    concurrency_server: Running, llm: Running, program: str, prompt: str, response_format: str | None
) -> None:
    reset(llm)
    response = post(concurrency_server, program, question="What is DSPy?")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["answer"] == "Echo: What is DSPy?"
    assert isinstance(answer["confidence"], float)

    (body,) = received(llm)
    assert prompt in _system(body)  # the adapter the config chose formatted the prompt
    sent = body.get("response_format")
    assert (sent or {}).get("type") == response_format
    if response_format == "json_schema":
        schema = sent["json_schema"]["schema"]
        assert set(schema["properties"]) == {"answer", "confidence"}
        assert schema["properties"]["confidence"]["type"] == "number"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("adapter: xml", "programs.P.adapter"),
        ("pool_size: 4", "programs.P: pool_size is only used with instance_mode: pool"),
        ("instance_mode: forked", "programs.P.instance_mode"),
    ],
)
def test_bad_program_options_stop_start_up_with_one_line(tmp_path: Any, options: str, message: str) -> None:
    path = tmp_path / "dspy.config.yaml"
    path.write_text(f"models:\n  registry:\n    m: {{model: openai/x}}\nprograms:\n  P:\n    {options}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert message in str(raised.value) and "\n" not in str(raised.value)
