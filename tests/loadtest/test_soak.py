"""Memory stays flat: short runs of the soak script (loadtest/soak.py; the 50,000-request run and
its curve are in docs/PERFORMANCE.md).

The 3,000-request run, whose limit tells DSPy's history on from off, takes minutes: marked
``slow`` (``make test-all`` runs it). ``make test`` keeps a 600-request run of the same
script and checks.
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.integration


def soak(tmp_path: Path, *options: str) -> tuple[dict[str, Any], str]:
    out = tmp_path / "soak.json"
    command = [sys.executable, "-m", "loadtest.soak", *options, "--json", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(out.read_text()), result.stdout


@pytest.mark.slow
def test_a_short_soak_serves_every_request_and_its_memory_stays_flat(tmp_path: Path) -> None:
    # 10 MiB over 2,000 requests after a 1,000-request warm-up: the server grows by ~2 MiB; with
    # DSPy's history on it would grow by ~20 MiB.
    summary, stdout = soak(
        tmp_path, "--requests", "3000", "--sample-every", "500", "--warmup", "1000",
        "--max-growth-mib", "10", "--concurrency", "16",
    )  # fmt: skip
    assert [sample["requests"] for sample in summary["samples"]] == [0, 500, 1000, 1500, 2000, 2500, 3000]
    assert summary["errors"] == 0 and summary["passed"] is True
    assert summary["growth_mib"] < 10
    assert "PASS" in stdout


def test_a_small_soak_serves_every_request_and_samples_the_memory(tmp_path: Path) -> None:
    """The fast representative: every answer checked, the memory sampled; too short to tell
    DSPy's history on from off (the slow run above does)."""
    summary, stdout = soak(
        tmp_path, "--requests", "600", "--sample-every", "200", "--warmup", "200",
        "--max-growth-mib", "10", "--concurrency", "16",
    )  # fmt: skip
    assert [sample["requests"] for sample in summary["samples"]] == [0, 200, 400, 600]
    assert summary["errors"] == 0 and summary["passed"] is True
    assert "PASS" in stdout
