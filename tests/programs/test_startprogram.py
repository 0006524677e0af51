"""``manage.py startprogram`` and ``manage.py programs``: validation, no overwrite, clean generated code,
and a scaffolded program that is discovered and answers through the mock LLM on both paths."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from programs.scaffold import ScaffoldError, class_name_for, module_name_for, plan
from tests.support import ROOT, Running, service

MANAGE = [sys.executable, "manage.py"]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "LOG_LEVEL": "WARNING", **env}
    return subprocess.run([*MANAGE, *args], cwd=ROOT, env=environment, capture_output=True, text=True)


def dspy_cli_project(root: Path, package: str = "scaffolded") -> Path:
    """An empty dspy-cli layout: src/<package>/modules and a config using the mock model."""
    modules = root / "src" / package / "modules"
    modules.mkdir(parents=True)
    (modules.parent / "__init__.py").write_text("")
    (modules / "__init__.py").write_text("")
    config = {
        "app_id": "scaffold-test",
        "models": {
            "default": "mock",
            "registry": {"mock": {"model": "openai/mock-model", "api_base": "http://127.0.0.1:9/v1",
                                  "api_key": "k", "num_retries": 0}},
        },
    }  # fmt: skip
    (root / "dspy.config.yaml").write_text(yaml.safe_dump(config))
    return modules


def startprogram(modules: Path, tests: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return manage("startprogram", *args, "--directory", str(modules), "--tests-dir", str(tests))


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected_class", "expected_module"),
    [("summarize", "Summarize", "summarize"), ("summarize_text", "SummarizeText", "summarize_text"),
     ("summarize-text", "SummarizeText", "summarize_text"), ("QAPair", "QAPair", "qa_pair")],
)  # fmt: skip
def test_names(name: str, expected_class: str, expected_module: str) -> None:
    assert class_name_for(name) == expected_class
    assert module_name_for(expected_class) == expected_module


@pytest.mark.parametrize(
    ("name", "signature", "module", "message"),
    [
        ("Good", "question answer", "Predict", "exactly one '->'"),
        ("Good", "question: Foo -> answer", "Predict", "Unknown name: Foo"),
        ("Good", "question -> ", "Predict", "at least one input and one output"),
        ("Good", "question -> answer", "Refine", "unknown module 'Refine'"),
        ("programs", "question -> answer", "Predict", "collides with the built-in route /programs"),
        ("Health", "question -> answer", "Predict", "collides with the built-in route /health"),
        ("1st", "question -> answer", "Predict", "not a valid Python class name"),
    ],
)
def test_invalid_requests_are_refused_before_writing(
    name: str, signature: str, module: str, message: str
) -> None:
    with pytest.raises(ScaffoldError, match=message):
        plan(name, signature, module)


def test_the_command_writes_nothing_for_a_bad_signature(tmp_path: Path) -> None:
    modules = dspy_cli_project(tmp_path)
    done = startprogram(modules, tmp_path / "tests", "Broken", "-s", "question: NotAType -> answer")
    assert done.returncode == 1
    assert "invalid signature" in done.stderr
    assert sorted(path.name for path in modules.iterdir()) == ["__init__.py"]
    assert not (tmp_path / "tests").exists()


def test_existing_files_are_never_overwritten(tmp_path: Path) -> None:
    modules = dspy_cli_project(tmp_path)
    tests = tmp_path / "tests"
    first = startprogram(modules, tests, "Summarize", "-s", "text -> summary")
    assert first.returncode == 0, first.stderr
    module_file = modules / "summarize.py"
    before = module_file.read_text()
    module_file.write_text(before + "# edited by hand\n")
    again = startprogram(modules, tests, "Summarize", "-s", "question -> answer", "-m", "CoT")
    assert again.returncode == 1
    assert "already exists; not overwriting it" in again.stderr
    assert module_file.read_text() == before + "# edited by hand\n"
    # A test file in the way stops it too, even when the module file is free.
    module_file.unlink()
    assert startprogram(modules, tests, "Summarize", "-s", "a -> b").returncode == 1
    assert not module_file.exists()


def test_a_class_name_taken_by_another_file_is_refused(tmp_path: Path) -> None:
    modules = dspy_cli_project(tmp_path)
    (modules / "mine.py").write_text("import dspy\n\n\nclass Summarize(dspy.Module):\n    pass\n")
    done = startprogram(modules, tmp_path / "tests", "Summarize", "-s", "text -> summary")
    assert done.returncode == 1
    assert "mine.py already defines Summarize" in done.stderr
    assert not (modules / "summarize.py").exists()


# -- what is generated ---------------------------------------------------------------------------

SCAFFOLDS = [
    ("summarize_text", "text -> summary", "Predict"),
    ("Classify", 'text: str, hints: list[str] -> label: Literal["pos", "neg"], confidence: float', "Predict"),
    ("explain", "question, context: list[str] -> answer, steps: int", "CoT"),
    ("research_agent", "question -> answer: str, sources: list[str]", "ReAct"),
    ("AProgramWithAVeryLongNameToForceWrapping",
     "first_long_input_field: str, second_long_input_field: list[str], third: dict[str, int] -> answer",
     "ChainOfThought"),
]  # fmt: skip


def test_generated_code_is_lint_clean_typed_async_and_its_tests_pass(tmp_path: Path) -> None:
    # A copy of this repo's layout and lint settings: programs/modules and tests/programs.
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for package in ("programs", "programs/modules", "tests"):
        (tmp_path / package).mkdir(parents=True, exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    modules, tests = tmp_path / "programs" / "modules", tmp_path / "tests" / "programs"
    for name, signature, module in SCAFFOLDS:
        done = startprogram(modules, tests, name, "-s", signature, "-m", module)
        assert done.returncode == 0, done.stderr
    assert (tests / "__init__.py").exists()  # tests/ is a package, so the new directory is one too

    # The ruff of the environment running the tests (its scripts sit beside its python), else PATH's.
    ruff = shutil.which("ruff", path=Path(sys.executable).parent) or shutil.which("ruff")
    assert ruff, "ruff is not installed in the test environment (requirements.txt)"
    checked = subprocess.run([ruff, "check", "."], cwd=tmp_path, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout
    formatted = subprocess.run([ruff, "format", "--check", "."], cwd=tmp_path, capture_output=True, text=True)
    assert formatted.returncode == 0, formatted.stdout

    classify = (modules / "classify.py").read_text()
    assert "def forward(self, text: str, hints: list[str]) -> dspy.Prediction:" in classify
    assert "async def aforward(self, text: str, hints: list[str]) -> dspy.Prediction:" in classify
    assert "return await self.predict.acall(text=text, hints=hints)" in classify
    assert 'label: Literal["pos", "neg"] = dspy.OutputField()' in classify
    assert "mirror ``forward`` step by step" in classify  # when acall alone is not enough
    assert "await self.agent.acall(" in (modules / "research_agent.py").read_text()

    # The test stubs run the program through forward and aforward with a fake LM.
    pytest_run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:django", "-p", "no:cacheprovider", "tests/programs"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert pytest_run.returncode == 0, pytest_run.stdout + pytest_run.stderr
    assert f"{2 * len(SCAFFOLDS)} passed" in pytest_run.stdout


# -- discovery and serving -----------------------------------------------------------------------


def test_programs_command_lists_programs_and_load_errors() -> None:
    listed = manage("programs", "--json", DSPY_PROJECT_DIR=str(ROOT / "tests/fixtures/broken_project"))
    assert listed.returncode == 1  # a module failed to import
    report = json.loads(listed.stdout)
    assert [(p["name"], p["execution"], p["model"], p["schema"]) for p in report["programs"]] == [
        ("StillServed", "sync", "mock", "ok")
    ]
    assert report["programs"][0]["file"].endswith("good.py")
    [failure] = report["load_errors"]
    assert failure["file"] == "broken.py"
    assert failure["programs"] == ["LostProgram"]
    assert "ModuleNotFoundError" in failure["error"]

    table = manage("programs", DSPY_PROJECT_DIR=str(ROOT / "tests/fixtures/service_project"))
    assert table.returncode == 0, table.stderr
    lines = {line.split()[0]: line.split() for line in table.stdout.splitlines()[2:]}
    assert lines["EchoAsync"][2:] == ["async", "mock", "ok"]
    assert lines["EchoSync"][2:] == ["sync", "mock", "ok"]


@pytest.mark.integration
def test_scaffolded_program_is_discovered_and_answers_through_the_mock(tmp_path: Path, llm: Running) -> None:
    modules = dspy_cli_project(tmp_path)
    done = manage("startprogram", "triage", "-s", "ticket -> team, urgency: int", "-m", "CoT",
                  DSPY_PROJECT_DIR=str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (modules / "triage.py").exists()
    assert (tmp_path / "tests" / "test_triage.py").exists()  # a dspy-cli project's tests/

    config = yaml.safe_load((tmp_path / "dspy.config.yaml").read_text())
    config["models"]["registry"]["mock"]["api_base"] = f"{llm.url}/v1"
    (tmp_path / "dspy.config.yaml").write_text(yaml.safe_dump(config))

    listed = json.loads(manage("programs", "--json", DSPY_PROJECT_DIR=str(tmp_path)).stdout)
    assert listed["programs"] == [
        {
            "name": "Triage",
            "file": str(modules / "triage.py"),
            "execution": "async",
            "model": "mock",
            "schema": "ok",
        }
    ]

    # Both paths, in a process built the way the server builds it: forward (sync) and aforward (acall).
    marker = uuid.uuid4().hex
    script = textwrap.dedent(f"""
        import asyncio, json
        import django
        django.setup()
        import dspy
        from programs.runtime import get_runtime
        program = get_runtime().programs["Triage"]
        with dspy.context(lm=program.lm, adapter=program.adapter):
            sync = program.instance(ticket="sync {marker}")
            native = asyncio.run(program.instance.acall(ticket="async {marker}"))
        print(json.dumps([sync.team, native.team, type(native.urgency).__name__]))
    """)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "dspysite.settings", "DSPY_PROJECT_DIR": str(tmp_path),
           "LOG_LEVEL": "WARNING"}  # fmt: skip
    ran = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    sync_team, async_team, urgency_type = json.loads(ran.stdout.strip().splitlines()[-1])
    assert f"sync {marker}" in sync_team
    assert f"async {marker}" in async_team
    assert urgency_type == "int"
    sent = httpx.get(f"{llm.url}/requests").json()["requests"]
    assert sum(marker in json.dumps(request) for request in sent) >= 2  # both went to the mock

    # And over HTTP: the server discovers it and runs it natively (async).
    with service(tmp_path, tmp_path, tmp_path / "dspy.config.yaml") as server:
        programs = {p["name"]: p for p in httpx.get(f"{server.url}/programs").json()["programs"]}
        assert programs["Triage"]["execution"] == "async"
        assert programs["Triage"]["input_schema"]["required"] == ["ticket"]
        answer = httpx.post(f"{server.url}/Triage", json={"ticket": f"http {marker}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert f"http {marker}" in body["team"]
        assert isinstance(body["urgency"], int)
        assert "reasoning" in body
