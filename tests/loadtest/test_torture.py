"""No request vanishes (issue 16): a short run of the torture test (loadtest/torture.py), one
uvicorn process and gunicorn with 2 workers, 2,500 well-behaved requests each.

Sync and async programs, 0.1-64 KB bodies, raw keep-alive and pipelining sockets, a shared httpx
pool, httpx pollers reusing their connection after ~5 s idle (with uvicorn's 5 s keep-alive
timeout about one in 20 of theirs was reset unanswered), and requests cut off mid-body or after
it. Every answered request must have exactly one inference log row, a cut-off one none or one.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.integration

CLIENTS = {"keep-alive", "pipelined", "httpx pool", "pollers"}


def test_every_request_is_answered_and_logged_once(tmp_path: Path) -> None:
    out = tmp_path / "torture.json"
    command = [
        sys.executable, "-m", "loadtest.torture", "--mode", "single,production", "--requests", "2500",
        "--keep-alive", "16", "--pipelined", "4", "--pool", "8", "--pollers", "40", "--poll-reuses", "2",
        "--max-seconds", "300", "--json", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    summaries = json.loads(out.read_text()) if out.exists() else []
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert [summary["mode"] for summary in summaries] == ["single", "production"]
    for summary in summaries:
        assert summary["errors"] == 0 and summary["problems"] == [], summary
        assert summary["requests"] >= 2500
        assert set(summary["by_client"]) == CLIENTS and min(summary["by_client"].values()) > 0
        assert summary["by_client"]["pollers"] >= 40 * 3  # each reused its connection twice at least
        assert summary["cut_mid_body"] > 0 and summary["cut_after_body"] > 0
        assert summary["rows"] >= summary["requests"]  # the script checked them one by one
        assert summary["passed"] is True
