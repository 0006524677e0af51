"""Each DSPy patch checks the version and the code it replaces, and stays off when they differ."""

import subprocess
import sys
from pathlib import Path

import dspy
import pytest

from programs import dspy_patches, dspy_speedups, lms, upstream, usage
from programs.dspy_calls import CALLS, LiteLLMCalls, NativeCalls
from tests.support import ROOT

# Every patch the server installs, with the DSPy objects each relies on.
PATCHES = {
    **{name: relies_on for name, _, relies_on in dspy_speedups.PATCHES},
    upstream.PATCH: upstream.RELIES_ON,
}
# The patches written for the DSPy in this venv (3.3: the LiteLLM-era wrapper and cost hook only).
FITTING = (
    [*PATCHES, usage.COST_HOOK, lms.CONNECTION_CAP]
    if isinstance(CALLS, NativeCalls)
    else [upstream.PATCH, usage.COST_HOOK]
)


def test_a_changed_or_missing_object_or_another_version_keeps_a_patch_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, expected = next(iter(upstream.RELIES_ON.items()))
    module_path, _, name = path.rpartition(".")
    owner = dspy_patches.resolve(module_path)
    relies_on = {path: expected}
    dspys = CALLS.execute if isinstance(CALLS, NativeCalls) else CALLS._forward
    monkeypatch.setattr(owner, name, dspys)  # DSPy's, wrapped or not
    assert dspy_patches.mismatch(relies_on, CALLS.versions) is None

    def execute(lm: object, call: object) -> None:  # another release's code, same name and signature
        return None

    monkeypatch.setattr(owner, name, execute)
    assert (
        dspy_patches.mismatch(relies_on, CALLS.versions) == f"{path} differs from the code it was written for"
    )
    gone = f"{module_path}.gone"
    assert dspy_patches.mismatch({gone: "0"}, CALLS.versions) == f"{gone} not found"
    monkeypatch.setattr(dspy, "__version__", "3.5.0")
    assert dspy_patches.mismatch({}) == "written for DSPy 3.4.0, 3.4.1"
    assert dspy_patches.mismatch({}, LiteLLMCalls.versions) == "written for DSPy 3.3.1"


def start_up(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """DSPy's set-up as the server does it, in a fresh process, then ``script``; its log on stderr."""
    prelude = (
        "import logging; logging.basicConfig(level=logging.INFO, format='%(name)s %(message)s')\n"
        "from programs.lms import configure_dspy; configure_dspy(1024)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + script],
        cwd=ROOT,
        env={**_env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _env() -> dict[str, str]:
    import os

    return {key: value for key, value in os.environ.items() if key != "DSPY_DJANGO_PATCHES"}


def test_start_up_logs_which_patches_are_on() -> None:
    """On the DSPy it runs with (requirements.txt's, or the oldest supported) every patch written for
    it fits; on 3.3 the native engine's are off, one line each, and the summary says so."""
    started = start_up("")
    assert started.returncode == 0, started.stderr
    summary = [line for line in started.stderr.splitlines() if "patches on:" in line]
    assert len(summary) == 1, started.stderr
    on = summary[0].split("patches on: ", 1)[1].split("; off: ", 1)[0].split(", ")
    assert sorted(on) == sorted(FITTING), summary[0]
    others = [name for name in [*PATCHES, usage.COST_HOOK, lms.CONNECTION_CAP] if name not in FITTING]
    off_lines = [
        line for line in started.stderr.splitlines() if " off (written for DSPy 3.4.0, 3.4.1)" in line
    ]
    assert len(off_lines) == len(others), started.stderr
    assert all(sum(f"patch {name!r} off" in line for line in off_lines) == 1 for name in others)


def test_off_every_patch_logs_one_line_and_dspy_runs_its_own_code() -> None:
    check = (
        "import asyncio, dspy\n"
        "from programs import dspy_speedups, upstream\n"
        "from programs.dspy_calls import CALLS, HOOK_MARK, NativeCalls\n"
        "assert asyncio.to_thread is dspy_speedups._original_to_thread\n"
        "if isinstance(CALLS, NativeCalls):\n"
        "    from dspy.clients import capabilities, execution\n"
        "    assert execution.execute is upstream._original_execute\n"
        "    assert execution.aexecute is upstream._original_aexecute\n"
        "    assert capabilities.resolve is dspy_speedups._original_resolve\n"
        "    assert not getattr(execution.finalize, HOOK_MARK, False)\n"
        "else:\n"
        "    from dspy.clients.base_lm import BaseLM\n"
        "    assert dspy.LM.forward is CALLS._forward\n"
        "    assert dspy.LM.aforward is CALLS._aforward\n"
        "    assert not getattr(BaseLM._process_lm_response, HOOK_MARK, False)\n"
    )
    started = start_up(check, DSPY_DJANGO_PATCHES="off")
    assert started.returncode == 0, started.stderr
    off_lines = [line for line in started.stderr.splitlines() if "(DSPY_DJANGO_PATCHES=off)" in line]
    names = [*PATCHES, usage.COST_HOOK, lms.CONNECTION_CAP]
    assert len(off_lines) == len(names)
    assert all(sum(f"patch {name!r} off" in line for line in off_lines) == 1 for name in names)
    assert "patches on: none;" in started.stderr


def test_with_the_upstream_wrapper_off_a_model_with_limits_is_never_served(tmp_path: Path) -> None:
    config = tmp_path / "dspy.config.yaml"
    config.write_text(
        "models:\n  default: judge\n  registry:\n    judge:\n      model: openai/judge-model\n"
        "      api_base: http://127.0.0.1:9/v1\n      api_key: k\n      rpm: 600\n"
    )
    check = (
        "import django; django.setup()\n"
        "from programs.runtime import get_runtime\n"
        "runtime = get_runtime()\n"
        "assert runtime.programs == {}, runtime.programs\n"
        "print('\\n'.join('failure: ' + failure.error for failure in runtime.failures))\n"
    )
    started = start_up(
        check, DSPY_DJANGO_PATCHES="off", DSPY_CONFIG=str(config), DJANGO_SETTINGS_MODULE="dspysite.settings"
    )
    assert started.returncode == 0, started.stderr
    errors = [line for line in started.stdout.splitlines() if line.startswith("failure: ")]
    assert errors and all("rpm/tpm and fallbacks need the upstream wrapper" in error for error in errors)


def test_start_up_imports_what_litellms_first_completion_would() -> None:
    """DSPy 3.3: LiteLLM imports ~2.6 s of modules on its first completion; start-up does it instead
    (a mock_response completion), so the first request does not pay for it."""
    if isinstance(CALLS, NativeCalls):
        pytest.skip("DSPy 3.4's native engine: no LiteLLM on the request path")
    started = start_up("import sys\nassert 'litellm.proxy._types' in sys.modules\n")
    assert started.returncode == 0, started.stderr
