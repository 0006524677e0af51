"""Deterministic prompts: a program's LM, adapter and DSPy settings are fixed at start-up; a change
of DSPy's global settings at runtime does not reach what a served program sends.

The fixture program ``Reconfigure`` changes them the ways a program's code can while the server
runs: ``dspy.configure(lm=<another model>, adapter=JSONAdapter())`` from its own task (DSPy lets
the first async task that calls it do so), and, from another thread,
``dspy.settings.callbacks.append(PromptGuard())`` (an in-place change of the global list, which
any thread can make; the callback rewrites the system message of every LM call it sees).
"""

import json
from pathlib import Path

import pytest

from tests.databases import ServerDatabase
from tests.programs.conftest import SERVICE_PROJECT, post, received, reset
from tests.support import Running, service

pytestmark = pytest.mark.integration

REQUESTS = [  # sync (worker thread) and native async programs, chat and JSON adapters
    ("Correlated", {"question": "The same question"}),
    ("CorrelatedAsync", {"question": "The same question"}),
    ("Structured", {"question": "The same question"}),
    ("StructuredJson", {"question": "The same question"}),
]


def test_the_mock_receives_byte_identical_requests_after_global_settings_change(
    tmp_path: Path, database: ServerDatabase, llm: Running, concurrency_config: Path
) -> None:
    # A server of its own: this test changes its global DSPy settings for good.
    with service(tmp_path, SERVICE_PROJECT, concurrency_config, **database.env()) as server:

        def sent() -> list[str]:
            """The bodies of the chat requests the mock receives for REQUESTS, serialised."""
            reset(llm)
            for program, body in REQUESTS:
                response = post(server, program, **body)
                assert response.status_code == 200, response.text
            return [json.dumps(body) for body in received(llm)]

        before = sent()
        assert len(before) == len(REQUESTS)

        changed = post(server, "Reconfigure", api_base=f"{llm.url}/v1")
        assert changed.status_code == 200, changed.text
        # The global settings did change (read from a thread outside any request).
        assert changed.json() == {
            "configure": "ok",
            "global": {"adapter": "JSONAdapter", "lm": "openai/other-model", "callbacks": ["PromptGuard"]},
        }

        after = sent()
    assert after == before  # model, messages, response_format: every byte the same
