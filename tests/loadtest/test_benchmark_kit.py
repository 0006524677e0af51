"""The load-test kit: assert_benchmark.py, the mock check, the locustfile and run_benchmark.sh.

The locust and run_benchmark.sh tests start real processes on loopback and take a few seconds
each; the full benchmark matrix is never run here.
"""

import csv
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
import yaml

from loadtest import assert_benchmark
from loadtest.summarize import mock_check, point_ratios
from tests.support import ROOT

LOADTEST = ROOT / "loadtest"
HEADER = [
    "Type", "Name", "Request Count", "Failure Count", "Median Response Time", "Average Response Time",
    "Min Response Time", "Max Response Time", "Average Content Size", "Requests/s", "Failures/s",
    "50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%",
]  # fmt: skip


def stats_csv(
    path: Path, *, requests: int = 1000, failures: int = 0, rps: float = 100.0, p95: int = 100
) -> Path:
    """A locust *_stats.csv with one endpoint row and the Aggregated row."""
    percentiles = [50, 60, 70, 75, 90, p95, p95 + 10, p95 + 20, p95 + 30, p95 + 30, p95 + 30]
    row = [requests, failures, 50, 55.0, 40.0, 400.0, 30.0, rps, rps * failures / requests, *percentiles]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerow(["POST", "/SimplePredict", *row])
        writer.writerow(["", "Aggregated", *row])
    return path


def run_assert(tmp_path: Path, baseline: dict, current: dict) -> int:
    return assert_benchmark.main(
        [str(stats_csv(tmp_path / "base.csv", **baseline)), str(stats_csv(tmp_path / "cur.csv", **current))]
    )


# ----------------------------------------------------------------------------------------------
# assert_benchmark.py
# ----------------------------------------------------------------------------------------------


def test_identical_runs_pass_and_print_the_comparison(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_assert(tmp_path, {}, {}) == 0
    out = capsys.readouterr().out
    assert "requests/s" in out and "p95 ms" in out and "OK" in out


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        ({"rps": 91.0}, 0),  # -9% requests/s
        ({"rps": 89.0}, 1),  # -11%
        ({"rps": 150.0}, 0),  # faster is fine
        ({"p95": 119}, 0),  # +19% p95
        ({"p95": 121}, 1),  # +21%
        ({"p95": 60}, 0),  # lower latency is fine
        ({"failures": 10}, 0),  # exactly 1%
        ({"failures": 11}, 1),  # 1.1%
    ],
)
def test_thresholds(tmp_path: Path, current: dict, expected: int) -> None:
    assert run_assert(tmp_path, {}, current) == expected


def test_each_regression_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_assert(tmp_path, {}, {"rps": 50.0, "p95": 200, "failures": 50}) == 1
    regressions = [line for line in capsys.readouterr().out.splitlines() if line.startswith("REGRESSION")]
    assert len(regressions) == 3
    assert "requests/s dropped 50.0%" in regressions[0]
    assert "p95 rose 100.0%" in regressions[1]
    assert "failures 5.00%" in regressions[2]


def test_limits_are_options(tmp_path: Path) -> None:
    base = stats_csv(tmp_path / "base.csv")
    cur = stats_csv(tmp_path / "cur.csv", rps=85.0)
    assert assert_benchmark.main([str(base), str(cur)]) == 1
    assert assert_benchmark.main([str(base), str(cur), "--max-rps-drop", "0.2"]) == 0


def test_a_run_without_requests_fails(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    with empty.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerow(["", "Aggregated", 0, 0, 0, 0, 0, 0, 0, 0, 0, *["N/A"] * 11])
    assert assert_benchmark.main([str(stats_csv(tmp_path / "base.csv")), str(empty)]) == 1


def test_a_file_that_is_not_locust_stats_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    assert assert_benchmark.main([str(stats_csv(tmp_path / "base.csv")), str(other)]) == 2
    assert "no Aggregated row" in capsys.readouterr().err
    assert assert_benchmark.main([str(tmp_path / "missing.csv"), str(other)]) == 2


def test_command_line_exit_code(tmp_path: Path) -> None:
    base = stats_csv(tmp_path / "base.csv")
    slow = stats_csv(tmp_path / "slow.csv", p95=300)
    script = str(LOADTEST / "assert_benchmark.py")
    assert subprocess.run([sys.executable, script, str(base), str(base)], capture_output=True).returncode == 0
    result = subprocess.run([sys.executable, script, str(base), str(slow)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "REGRESSION: p95 rose 200.0%" in result.stdout


def results_dir(path: Path, runs: dict[str, dict]) -> Path:
    """A run_matrix.sh-like directory: <label>_stats.csv and <label>_server.json per run."""
    path.mkdir()
    for label, numbers in runs.items():
        stats_csv(path / f"{label}_stats.csv", **numbers)
        server = label.split("_", 1)[0]
        (path / f"{label}_server.json").write_text(json.dumps({"label": label, "server": server}))
    return path


MATRIX = ("ours-single_AsyncPredict_u50_d50", "ours-dspy-cli-layout_AsyncPredict_u50_d50")


def test_directories_compare_every_label_of_the_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    baseline = results_dir(tmp_path / "baseline", {label: {} for label in MATRIX})
    same = results_dir(tmp_path / "same", {label: {} for label in MATRIX})
    assert assert_benchmark.main([str(baseline), str(same)]) == 0
    assert capsys.readouterr().out.count("current:  ") == len(MATRIX)

    slower = results_dir(tmp_path / "slower", {MATRIX[0]: {}, MATRIX[1]: {"rps": 50.0}})
    assert assert_benchmark.main([str(baseline), str(slower)]) == 1
    out = capsys.readouterr().out.splitlines()
    regressions = [line.removeprefix("REGRESSION: ") for line in out if line.startswith("REGRESSION: ")]
    assert regressions == [f"{MATRIX[1]}: requests/s dropped 50.0% (more than 10%): 100.0 -> 50.0"]


def test_a_baseline_label_not_measured_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    baseline = results_dir(tmp_path / "baseline", {label: {} for label in MATRIX})
    partial = results_dir(tmp_path / "partial", {MATRIX[0]: {}})
    assert assert_benchmark.main([str(baseline), str(partial)]) == 1
    assert f"REGRESSION: {MATRIX[1]}: not measured" in capsys.readouterr().out


def test_dspy_clis_own_runs_are_the_reference_not_compared(tmp_path: Path) -> None:
    reference = "dspy-cli_AsyncPredict_u50_d50"
    baseline = results_dir(tmp_path / "baseline", {MATRIX[0]: {}, reference: {}})
    current = results_dir(tmp_path / "current", {MATRIX[0]: {}, reference: {"rps": 10.0}})
    assert assert_benchmark.main([str(baseline), str(current)]) == 0
    assert assert_benchmark.main([str(baseline), str(tmp_path / "current" / f"{MATRIX[0]}_stats.csv")]) == 2


# ----------------------------------------------------------------------------------------------
# The mock check (summarize.py)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ok", "failures", "completions", "calls", "passed"),
    [
        (100, 0, 100, 1, True),
        (100, 0, 99, 1, False),  # an answer served without the model: a cache
        (100, 0, 101, 1, False),  # a completion no request accounts for
        (100, 0, 200, 2, True),  # two LM calls per request
        (100, 0, 100, 2, False),
        (100, 5, 100, 1, True),  # the failures never reached the mock
        (100, 5, 105, 1, True),  # they all did
        (100, 5, 99, 1, False),
        (100, 5, 106, 1, False),
    ],
)
def test_mock_check(ok: int, failures: int, completions: int, calls: int, passed: bool) -> None:
    assert mock_check(ok, failures, completions, calls)[0] is passed


# ----------------------------------------------------------------------------------------------
# The locustfile, against a stub server that answers right or wrong
# ----------------------------------------------------------------------------------------------


class StubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, crossed: bool) -> None:
        super().__init__(("127.0.0.1", 0), StubHandler)
        self.crossed = crossed
        self.served = 0
        self.lock = threading.Lock()


class StubHandler(BaseHTTPRequestHandler):
    server: StubServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        question = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["question"]
        answer = "Echo: a question someone else asked" if self.server.crossed else f"Echo: {question}"
        body = json.dumps({"answer": answer}).encode()
        with self.server.lock:
            self.server.served += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub(request: pytest.FixtureRequest) -> Iterator[StubServer]:
    server = StubServer(crossed=request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def run_locust(stub: StubServer, prefix: Path) -> subprocess.CompletedProcess[str]:
    host = f"http://127.0.0.1:{stub.server_address[1]}"
    return subprocess.run(
        [
            sys.executable, "-m", "locust", "-f", str(LOADTEST / "locustfile.py"), "--headless",
            "--only-summary", "-u", "3", "-r", "3", "-t", "2s", "--stop-timeout", "10",
            "--host", host, "--csv", str(prefix), "AsyncPredict",
        ],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip


def aggregated(prefix: Path) -> dict[str, str]:
    with Path(f"{prefix}_stats.csv").open(newline="") as handle:
        return next(row for row in csv.DictReader(handle) if row["Name"] == "Aggregated")


@pytest.mark.integration
@pytest.mark.parametrize("stub", [False], indirect=True)
def test_locust_counts_every_request_in_its_csv(stub: StubServer, tmp_path: Path) -> None:
    result = run_locust(stub, tmp_path / "right")
    assert result.returncode == 0, result.stdout + result.stderr
    row = aggregated(tmp_path / "right")
    assert int(row["Failure Count"]) == 0
    # The CSV holds the final numbers: every request the server answered, none missing.
    assert int(row["Request Count"]) == stub.served > 0


@pytest.mark.integration
@pytest.mark.parametrize("stub", [True], indirect=True)
def test_locust_fails_answers_that_do_not_echo_their_question(stub: StubServer, tmp_path: Path) -> None:
    result = run_locust(stub, tmp_path / "crossed")
    assert result.returncode == 1, result.stdout + result.stderr
    row = aggregated(tmp_path / "crossed")
    assert int(row["Failure Count"]) == int(row["Request Count"]) == stub.served > 0
    failures = Path(f"{tmp_path / 'crossed'}_failures.csv").read_text()
    assert "cache hit or crossed answer" in failures


# ----------------------------------------------------------------------------------------------
# run_benchmark.sh, a few seconds in single and dspy-cli-layout mode
# ----------------------------------------------------------------------------------------------


def run_benchmark(tmp_path: Path, mode: str, program: str, label: str, **env: str) -> str:
    """A few seconds of 4 users against a 20 ms mock; results and the work directory in tmp_path."""
    environment = {
        **os.environ, "RESULTS_DIR": str(tmp_path), "WARMUP_REQUESTS": "2", "TMPDIR": str(tmp_path), **env,
    }  # fmt: skip
    command = [
        str(LOADTEST / "run_benchmark.sh"), "--mode", mode, "--program", program,
        "--users", "4", "--duration", "4s", "--delay-ms", "20", "--label", label,
    ]  # fmt: skip
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.integration
def test_run_benchmark_smoke(tmp_path: Path) -> None:
    stdout = run_benchmark(tmp_path, "single", "SimplePredict", "smoke")

    row = aggregated(tmp_path / "smoke")
    assert int(row["Request Count"]) > 0
    assert int(row["Failure Count"]) == 0
    assert (tmp_path / "smoke.html").is_file()
    record = json.loads((tmp_path / "smoke_server.json").read_text())
    assert record["requests"] == int(row["Request Count"])
    assert record["mock_check"] == "pass"
    assert record["mock_completions"] == record["requests"]
    assert record["cpu_s_per_1000"] > 0
    assert record["peak_rss_mb"] > 10
    assert "OK mock completions" in stdout
    # Everything it started is gone, and its temporary directory too.
    for name in ("server", "mock"):
        assert not psutil.pid_exists(record["usage"][name]["root_pid"])
    assert not list(tmp_path.glob("bench-*"))
    # A run compared with itself passes assert_benchmark.
    assert assert_benchmark.main([str(tmp_path / "smoke_stats.csv")] * 2) == 0


@pytest.mark.integration
def test_dspy_cli_layout_serves_the_project_without_declared_models(tmp_path: Path) -> None:
    """The mode users get: the fixture as a dspy-cli project, found by DSPY_PROJECT_DIR alone."""
    ignored = str(tmp_path / "must-not-be-read.yaml")
    run_benchmark(tmp_path, "dspy-cli-layout", "AsyncPredict", "layout", KEEP_WORK="1", DSPY_CONFIG=ignored)

    record = json.loads((tmp_path / "layout_server.json").read_text())
    assert record["server"] == "ours-dspy-cli-layout"
    assert (record["layout"], record["mock_check"]) == ("dspy-cli", "pass")
    assert record["requests"] == int(aggregated(tmp_path / "layout")["Request Count"]) > 0
    (work,) = tmp_path.glob("bench-*")
    log = (work / "server-dspy-cli-layout.log").read_text()
    served = work / "fixture_project" / "dspy.config.yaml"
    assert f"with config {served}" in log
    assert "declared as" not in log and "capabilities and prices from DSPy's metadata" in log
    config = yaml.safe_load(served.read_text())
    assert "declared_models" not in config
    fixture = yaml.safe_load((LOADTEST / "fixture_project" / "dspy.config.yaml").read_text())
    assert "declared_models" in fixture  # while the fixture itself keeps its section


@pytest.mark.integration
def test_bare_proxy_mode_measures_the_ceiling(tmp_path: Path) -> None:
    """The bare proxy answers the locust scenario through the mock, one completion per request."""
    run_benchmark(tmp_path, "bare-proxy", "AsyncPredict", "bare")

    record = json.loads((tmp_path / "bare_server.json").read_text())
    assert (record["server"], record["layout"], record["mock_check"]) == ("bare-proxy", "none", "pass")
    requests = int(aggregated(tmp_path / "bare")["Request Count"])
    assert record["requests"] == record["mock_completions"] == requests > 0
    assert record["cpu_s_per_1000"] > 0


# ----------------------------------------------------------------------------------------------
# summarize.py ratios
# ----------------------------------------------------------------------------------------------


def server_record(server: str, *, users: int = 200, delay_ms: int = 500, rps: float, cpu: float) -> dict:
    label = f"{server}_AsyncPredict_u{users}_d{delay_ms}"
    return {"label": label, "server": server, "program": "AsyncPredict", "users": users,
            "delay_ms": delay_ms, "rps": rps, "cpu_s_per_1000": cpu}  # fmt: skip


def test_ratios_compare_each_server_of_ours_with_the_references_of_its_point() -> None:
    records = [
        server_record("ours-dspy-cli-layout", rps=380.0, cpu=2.0),
        server_record("dspy-cli", rps=100.0, cpu=8.0),
        server_record("bare-proxy", rps=395.0, cpu=0.5),
        server_record("ours-single", users=50, delay_ms=50, rps=900.0, cpu=1.5),  # another point
    ]
    rows = point_ratios(records)

    by_point = {(row["users"], row["server"]): row for row in rows}
    assert set(by_point) == {(200, "ours-dspy-cli-layout"), (50, "ours-single")}
    layout = by_point[200, "ours-dspy-cli-layout"]
    assert (layout["cpu_vs_dspy_cli"], layout["cpu_vs_bare_proxy"]) == (0.25, 4.0)
    assert layout["rps_vs_dspy_cli"] == 3.8
    assert layout["share_of_bound"] == 0.95  # 380 of 200 users / 0.5 s
    single = by_point[50, "ours-single"]  # no reference measured at its point: no ratio; its bound
    assert (single["cpu_vs_dspy_cli"], single["rps_vs_dspy_cli"]) == (None, None)
    assert single["share_of_bound"] == 0.9
