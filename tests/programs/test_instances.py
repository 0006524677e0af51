"""Safe instances: ``instance_mode: shared | pool | per_request``, forks that share their LMs, and
``manage.py evaluate`` with one fork per thread.

The stateful fixture module stores its question in ``self.last_question``, waits until all the
calls of its group have stored theirs (a rendezvous: the overlap is certain, not hoped for), then
asks the LM about ``self.last_question``. Shared by concurrent calls, every call asks about the
last writer's question; with an instance per call, each asks about its own.
"""

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import dspy
import pytest
from dspy.clients import execution as dspy_execution

from programs.config import load_config
from programs.discovery import Discovery, ProgramSpec
from programs.execution import run_program
from programs.instances import fork
from programs.runtime import build_runtime
from programs.usage import RequestUsage
from tests.programs.conftest import SERVICE_PROJECT, concurrently
from tests.support import ROOT, Running

GROUP_SIZE = 8


@pytest.mark.integration
@pytest.mark.parametrize(
    ("program", "safe"),
    [
        ("Stateful", False),  # shared (the default), native async
        ("StatefulSync", False),  # shared, sync: one worker thread per call
        ("StatefulPool", True),  # instance_mode: pool, pool_size: 8
        ("StatefulSyncPool", True),
        ("StatefulPerRequest", True),  # instance_mode: per_request
    ],
)
def test_a_stateful_module_is_wrong_when_shared_and_right_with_an_instance_per_call(
    concurrency_server: Running, program: str, safe: bool
) -> None:
    group = uuid.uuid4().hex
    questions = [f"{program} question {i}" for i in range(GROUP_SIZE)]
    requests = [(f"/{program}", {}, {"question": q, "group": group, "size": GROUP_SIZE}) for q in questions]
    responses = concurrently(concurrency_server, requests)
    assert [status for status, _, _ in responses] == [200] * GROUP_SIZE, responses
    answers = [body["answer"] for _, _, body in responses]
    if safe:
        assert answers == [f"Echo: {q}" for q in questions]
    else:
        # Every call asked about the same question: the one stored last on the shared instance.
        assert len(set(answers)) == 1 and answers[0] in {f"Echo: {q}" for q in questions}, answers


class OwnLM(dspy.Module):
    """A module that brings its own LM (set on its predictor), as user modules may."""

    api_base = ""

    def __init__(self) -> None:
        super().__init__()
        self.predict = dspy.Predict("question -> answer")
        self.predict.lm = dspy.LM("openai/mock-model", api_base=self.api_base, api_key="k", cache=False)

    async def aforward(self, question: str) -> dspy.Prediction:
        return await self.predict.acall(question=question)


def test_forks_share_the_lm_and_per_request_opens_no_new_connections(
    tmp_path: Path, llm: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "dspy.config.yaml"
    mock = {"model": "openai/mock-model", "api_base": f"{llm.url}/v1", "api_key": "k"}
    settings = {
        "models": {"registry": {"mock": mock}},
        "server": {"sync_worker_threads": 4},
        "programs": {"OwnLM": {"instance_mode": "per_request"}},
    }
    config.write_text(json.dumps(settings))  # JSON is YAML
    monkeypatch.setattr(OwnLM, "api_base", f"{llm.url}/v1")
    spec = ProgramSpec("OwnLM", OwnLM, Path(__file__), is_async=True)
    runtime = build_runtime(load_config(config), Discovery(specs=[spec]))
    program = runtime.programs["OwnLM"]
    assert program.instances is not None
    served_lm = program.instance.predict.lm

    copy = fork(program.instance)
    assert copy is not program.instance and copy.predict is not program.instance.predict
    assert copy.predict.lm is served_lm  # the very same LM: same connection pool, no copied history

    engines: list[object] = []  # every upstream connection pool DSPy creates from now on

    class CountedEngine(dspy_execution.AsyncLM15Engine):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            engines.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(dspy_execution, "AsyncLM15Engine", CountedEngine)

    async def requests() -> list[bytes]:
        return [await run_program(runtime, program, {"question": f"q{i}"}, RequestUsage()) for i in range(20)]

    try:
        bodies = asyncio.run(requests())
    finally:
        runtime.executor.shutdown()
    assert [json.loads(body)["answer"] for body in bodies] == [f"Echo: q{i}" for i in range(20)]
    assert len(engines) == 1  # one pool for this event loop, reused by all 20 forks
    assert program.instance.predict.lm is served_lm


def test_evaluate_runs_a_fork_per_thread_and_leaves_the_served_instance_alone(
    tmp_path: Path, concurrency_config: Path
) -> None:
    data = tmp_path / "data.jsonl"
    rows = [{"question": f"q{i}", "group": "eval", "size": 4, "answer": f"Echo: q{i}"} for i in range(40)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    env = {**os.environ, "DSPY_PROJECT_DIR": str(SERVICE_PROJECT), "DSPY_CONFIG": str(concurrency_config)}

    def evaluate(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [
            sys.executable,
            "manage.py",
            "evaluate",
            "StatefulSync",
            str(data),
            "--threads",
            "4",
            *extra,
        ]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

    forked = evaluate("--metric", "exact_match")
    assert forked.returncode == 0, forked.stdout + forked.stderr
    assert "one fork of the program per thread" in forked.stdout
    assert "Score: 100.0% (40 / 40)" in forked.stdout
    assert "Served instance: unchanged" in forked.stdout

    # The same evaluation on the served instance itself: the data does make the threads collide.
    shared = evaluate("--metric", "exact_match", "--shared")
    assert shared.returncode == 0, shared.stdout + shared.stderr
    # 4 threads meet at each rendezvous and all ask about the question stored last: ~1 in 4 right.
    score = float(re.search(r"Score: ([\d.]+)%", shared.stdout)[1])  # type: ignore[index]
    assert score <= 50, shared.stdout
    assert "Served instance: changed (self.calls, self.last_question)" in shared.stdout


def test_evaluate_refuses_unknown_programs_and_bad_data(tmp_path: Path, concurrency_config: Path) -> None:
    env = {**os.environ, "DSPY_PROJECT_DIR": str(SERVICE_PROJECT), "DSPY_CONFIG": str(concurrency_config)}
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "only inputs"}\n')

    def evaluate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", "evaluate", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )

    unknown = evaluate("NoSuchProgram", str(data))
    assert unknown.returncode == 1 and "no program 'NoSuchProgram'" in unknown.stderr
    no_labels = evaluate("Correlated", str(data))
    assert no_labels.returncode == 1 and "data.jsonl:1: no expected output" in no_labels.stderr
    bad_metric = evaluate("Correlated", str(data), "--metric", "nowhere.metric")
    assert bad_metric.returncode == 1 and "--metric nowhere.metric" in bad_metric.stderr


def test_a_fork_has_its_own_state_and_the_same_lms() -> None:
    lm = dspy.LM("openai/mock-model", api_base="http://127.0.0.1:9/v1", api_key="k")
    step = dspy.Predict("question -> answer")
    step.lm = lm
    best = dspy.BestOfN(step, N=3, reward_fn=lambda args, prediction: 1.0, threshold=1.0)
    copy = fork(best)
    copy.fail_count -= 1  # what BestOfN does to itself on a failed attempt
    assert (best.fail_count, copy.fail_count) == (3, 2)
    assert copy.module is not step and copy.module.lm is lm
