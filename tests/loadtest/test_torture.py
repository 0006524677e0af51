"""No request vanishes (issue 16): short runs of the torture test (loadtest/torture.py).

Sync and async programs, 0.1-64 KB bodies, raw keep-alive and pipelining sockets, a shared httpx
pool, httpx pollers reusing their connection after ~5 s idle (with uvicorn's 5 s keep-alive
timeout about one in 20 of theirs was reset unanswered), and requests cut off mid-body or after
it. Every answered request must have exactly one inference log row, a cut-off one none or one.

The full short run (one uvicorn process and gunicorn with 2 workers, 2,500 requests each, 40
pollers reusing their connection twice) takes minutes: marked ``slow`` (``make test-all`` runs
it). ``make test`` keeps a smaller run of every client kind on one process.
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.integration

CLIENTS = {"keep-alive", "pipelined", "httpx pool", "pollers"}


def torture(tmp_path: Path, *options: str) -> list[dict[str, Any]]:
    out = tmp_path / "torture.json"
    command = [sys.executable, "-m", "loadtest.torture", *options, "--json", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    summaries = json.loads(out.read_text()) if out.exists() else []
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return summaries


def check(summary: dict[str, Any], requests: int, pollers: int, reuses: int) -> None:
    assert summary["errors"] == 0 and summary["problems"] == [], summary
    assert summary["requests"] >= requests
    assert set(summary["by_client"]) == CLIENTS and min(summary["by_client"].values()) > 0
    assert summary["by_client"]["pollers"] >= pollers * (reuses + 1)  # each reused its connection
    assert summary["cut_mid_body"] > 0 and summary["cut_after_body"] > 0
    assert summary["rows"] >= summary["requests"]  # the script checked them one by one
    assert summary["passed"] is True


@pytest.mark.slow
def test_every_request_is_answered_and_logged_once(tmp_path: Path) -> None:
    summaries = torture(
        tmp_path, "--mode", "single,production", "--requests", "2500", "--keep-alive", "16",
        "--pipelined", "4", "--pool", "8", "--pollers", "40", "--poll-reuses", "2", "--max-seconds", "300",
    )  # fmt: skip
    assert [summary["mode"] for summary in summaries] == ["single", "production"]
    for summary in summaries:
        check(summary, requests=2500, pollers=40, reuses=2)


def test_a_small_run_of_every_client_on_one_process(tmp_path: Path) -> None:
    """The fast representative: the same checks, 300 requests, one uvicorn process."""
    summaries = torture(
        tmp_path, "--mode", "single", "--requests", "300", "--keep-alive", "4", "--pipelined", "2",
        "--pool", "4", "--pollers", "4", "--poll-reuses", "1", "--cut-ratio", "0.1", "--max-seconds", "120",
    )  # fmt: skip
    assert [summary["mode"] for summary in summaries] == ["single"]
    check(summaries[0], requests=300, pollers=4, reuses=1)
