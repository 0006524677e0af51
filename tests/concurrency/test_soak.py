"""Memory stays flat: a short run of the soak script (loadtest/soak.py; the 50,000-request run and
its curve are in docs/PERFORMANCE.md)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.integration


def test_a_short_soak_serves_every_request_and_its_memory_stays_flat(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    # 10 MiB over 2,000 requests after a 1,000-request warm-up: the server grows by ~2 MiB; with
    # DSPy's history on it would grow by ~20 MiB.
    command = [
        sys.executable, "-m", "loadtest.soak", "--requests", "3000", "--sample-every", "500",
        "--warmup", "1000", "--max-growth-mib", "10", "--concurrency", "16", "--json", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(out.read_text())
    assert [sample["requests"] for sample in summary["samples"]] == [0, 500, 1000, 1500, 2000, 2500, 3000]
    assert summary["errors"] == 0 and summary["passed"] is True
    assert summary["growth_mib"] < 10
    assert "PASS" in result.stdout
