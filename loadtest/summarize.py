"""Resource sampling and result records for ``run_benchmark.sh``.

Three subcommands:

``sample --pid server=PID [--pid mock=PID] --out FILE``
    Sample each process tree (the process and all its descendants, e.g. gunicorn's master and
    workers) from psutil until SIGTERM/SIGINT, then write the tree's CPU seconds (user + system)
    used while sampling, its peak and final RSS, and the per-process RSS high-water marks.

``report --label L --stats L_stats.csv --usage FILE --mock-stats FILE --calls-per-request K ...``
    Merge locust's aggregated row, the usage sample and the mock's counters into
    ``results/<LABEL>_server.json``; check the mock served exactly ``K`` completions per
    successful request (no hidden cache); print one summary line. Exits 1 when the check fails.

``table RESULTS_DIR``
    A Markdown table of every ``*_server.json`` in the directory.
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MB = 1024 * 1024

TABLE_COLUMNS = (
    ("label", "label"),
    ("server", "server"),
    ("program", "program"),
    ("users", "users"),
    ("delay_ms", "delay ms"),
    ("requests", "requests"),
    ("rps", "req/s"),
    ("p50_ms", "p50 ms"),
    ("p95_ms", "p95 ms"),
    ("p99_ms", "p99 ms"),
    ("failures", "failures"),
    ("peak_rss_mb", "peak RSS MB"),
    ("cpu_s_per_1000", "CPU s / 1k req"),
    ("server_cpu_utilisation", "server cores"),
    ("machine_cpu_utilisation", "machine busy"),
    ("mock_check", "mock check"),
)


# ----------------------------------------------------------------------------------------------
# sample
# ----------------------------------------------------------------------------------------------


@dataclass
class TreeUsage:
    """CPU and memory of one process tree while it is sampled."""

    root: int
    last_cpu: dict[int, tuple[float, float]] = field(default_factory=dict)
    first_user_system: dict[int, tuple[float, float]] = field(default_factory=dict)
    hwm_kb: dict[int, int] = field(default_factory=dict)
    peak_rss: int = 0
    last_rss: int = 0
    first_rss: int | None = None
    max_processes: int = 0
    samples: int = 0

    def sample(self, started: bool) -> bool:
        """One sample; False once the root process is gone."""
        import psutil

        try:
            root = psutil.Process(self.root)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            return False
        rss = 0
        alive = 0
        for process in processes:
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    memory = process.memory_info()
            except psutil.Error:
                continue
            alive += 1
            rss += memory.rss
            user_system = (times.user, times.system)
            if process.pid not in self.first_user_system:
                # Present at the first sample: count from here. Born later: count all its CPU.
                self.first_user_system[process.pid] = user_system if not started else (0.0, 0.0)
            self.last_cpu[process.pid] = user_system
            hwm = _vm_hwm_kb(process.pid)
            if hwm is not None:
                self.hwm_kb[process.pid] = max(hwm, self.hwm_kb.get(process.pid, 0))
        self.samples += 1
        self.peak_rss = max(self.peak_rss, rss)
        self.last_rss = rss
        if self.first_rss is None:
            self.first_rss = rss
        self.max_processes = max(self.max_processes, alive)
        return True

    def result(self, duration_s: float) -> dict[str, Any]:
        user = sum(last[0] - self.first_user_system[pid][0] for pid, last in self.last_cpu.items())
        system = sum(last[1] - self.first_user_system[pid][1] for pid, last in self.last_cpu.items())
        return {
            "root_pid": self.root,
            "samples": self.samples,
            "duration_s": round(duration_s, 3),
            "cpu_user_s": round(user, 3),
            "cpu_system_s": round(system, 3),
            "cpu_s": round(user + system, 3),
            "cpu_utilisation": round((user + system) / duration_s, 3) if duration_s > 0 else None,
            "rss_start_mb": round((self.first_rss or 0) / MB, 1),
            "rss_end_mb": round(self.last_rss / MB, 1),
            "peak_rss_mb": round(self.peak_rss / MB, 1),
            # Kernel high-water marks summed over the tree: an upper bound of the peak that
            # sampling can miss between two samples.
            "sum_vm_hwm_mb": round(sum(self.hwm_kb.values()) / 1024, 1) if self.hwm_kb else None,
            "max_processes": self.max_processes,
        }


def _vm_hwm_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def machine_usage(start: Any, end: Any, duration_s: float) -> dict[str, Any]:
    """The whole machine's busy CPU over the window: load generator, mock and neighbours included.

    On a small machine the server, the mock and locust share the cores; a machine near 100% busy
    means the numbers measure the machine, not the server alone.
    """
    import psutil

    # guest time is already counted in user time (Linux /proc/stat): leave it out of the total.
    delta = {
        name: value - getattr(start, name)
        for name, value in end._asdict().items()
        if name not in ("guest", "guest_nice")
    }
    total = sum(delta.values())
    busy = total - delta.get("idle", 0.0) - delta.get("iowait", 0.0)
    return {
        "cpus": psutil.cpu_count(),
        "busy_cpu_s": round(busy, 2),
        "utilisation": round(busy / total, 3) if total > 0 else None,
        "duration_s": round(duration_s, 3),
    }


def command_sample(args: argparse.Namespace) -> int:
    trees: dict[str, TreeUsage] = {}
    for item in args.pid:
        name, _, pid = item.partition("=")
        if not pid.isdigit():
            raise SystemExit(f"--pid expects NAME=PID, got {item!r}")
        trees[name] = TreeUsage(int(pid))
    stop = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    import psutil

    started_at = time.monotonic()
    machine_start = psutil.cpu_times()
    for tree in trees.values():
        tree.sample(started=False)
    if args.ready:
        Path(args.ready).touch()
    while not stop:
        time.sleep(args.interval)
        for tree in trees.values():
            tree.sample(started=True)
    for tree in trees.values():
        tree.sample(started=True)
    duration = time.monotonic() - started_at
    result: dict[str, Any] = {name: tree.result(duration) for name, tree in trees.items()}
    result["machine"] = machine_usage(machine_start, psutil.cpu_times(), duration)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------


def aggregated_row(stats_csv: Path) -> dict[str, str]:
    """Locust's ``Aggregated`` row of a ``*_stats.csv`` file."""
    with stats_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("Name") == "Aggregated":
                return row
    raise ValueError(f"{stats_csv}: no Aggregated row (is this a locust *_stats.csv file?)")


def _number(row: dict[str, str], column: str) -> float:
    value = row.get(column, "")
    if value in ("", "N/A"):
        return 0.0
    return float(value)


def mock_check(ok: int, failures: int, completions: int, calls_per_request: int) -> tuple[bool, str]:
    """Did the mock serve exactly ``calls_per_request`` completions per successful request?

    Without failures the counts must be equal. A failed request may or may not have reached the
    mock (a crossed answer did, a refused one did not), so with failures the completions must lie
    between the successes' and all requests' share; fewer than the successes' share means answers
    were served without the model (a cache).
    """
    expected = ok * calls_per_request
    if failures == 0:
        passed = completions == expected
        relation = "==" if passed else "!="
        return passed, f"mock completions {completions} {relation} {calls_per_request} x {ok} successes"
    upper = (ok + failures) * calls_per_request
    passed = expected <= completions <= upper
    return passed, (
        f"mock completions {completions} {'within' if passed else 'outside'} [{expected}, {upper}] "
        f"({calls_per_request} x {ok} successes, {failures} failures)"
    )


def command_report(args: argparse.Namespace) -> int:
    row = aggregated_row(Path(args.stats))
    usage = json.loads(Path(args.usage).read_text()) if args.usage else {}
    mock_stats = json.loads(Path(args.mock_stats).read_text())
    requests = int(_number(row, "Request Count"))
    failures = int(_number(row, "Failure Count"))
    ok = requests - failures
    passed, check_text = mock_check(ok, failures, int(mock_stats["completions"]), args.calls_per_request)
    server = usage.get("server", {})
    cpu_s = server.get("cpu_s")
    meta = dict(item.split("=", 1) for item in args.meta)
    record: dict[str, Any] = {
        "label": args.label,
        **{key: _maybe_int(value) for key, value in meta.items()},
        "requests": requests,
        "failures": failures,
        "failure_ratio": round(failures / requests, 5) if requests else None,
        "rps": round(_number(row, "Requests/s"), 2),
        "p50_ms": _number(row, "50%"),
        "p95_ms": _number(row, "95%"),
        "p99_ms": _number(row, "99%"),
        "max_ms": _number(row, "Max Response Time"),
        "avg_ms": round(_number(row, "Average Response Time"), 2),
        "peak_rss_mb": server.get("peak_rss_mb"),
        "server_cpu_utilisation": server.get("cpu_utilisation"),
        "machine_cpu_utilisation": usage.get("machine", {}).get("utilisation"),
        "cpu_s": cpu_s,
        "cpu_s_per_1000": round(cpu_s * 1000 / requests, 3) if cpu_s is not None and requests else None,
        "mock_completions": int(mock_stats["completions"]),
        "mock_peak_in_flight": mock_stats.get("peak_in_flight"),
        "mock_faults": mock_stats.get("faults"),
        "calls_per_request": args.calls_per_request,
        "mock_check": "pass" if passed else "FAIL",
        "mock_check_detail": check_text,
        "usage": usage,
    }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"{args.label}: {requests} requests, {failures} failures, {record['rps']} req/s, "
        f"p50 {record['p50_ms']:g} ms, p95 {record['p95_ms']:g} ms, p99 {record['p99_ms']:g} ms, "
        f"peak RSS {record['peak_rss_mb']} MB, CPU {record['cpu_s_per_1000']} s per 1000 requests, "
        f"machine {record['machine_cpu_utilisation']} busy"
    )
    print(f"{args.label}: {'OK' if passed else 'FAIL'} {check_text}")
    return 0 if passed else 1


def _maybe_int(value: str) -> int | str:
    return int(value) if value.isdigit() else value


# ----------------------------------------------------------------------------------------------
# table
# ----------------------------------------------------------------------------------------------


def markdown_table(
    records: Iterable[dict[str, Any]], columns: tuple[tuple[str, str], ...] = TABLE_COLUMNS
) -> str:
    lines = [
        "| " + " | ".join(title for _, title in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for record in records:
        cells = []
        for key, _ in columns:
            value = record.get(key)
            cells.append("" if value is None else f"{value:g}" if isinstance(value, float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def command_table(args: argparse.Namespace) -> int:
    paths = sorted(Path(args.results_dir).glob("*_server.json"))
    if not paths:
        print(f"no *_server.json in {args.results_dir}", file=sys.stderr)
        return 1
    records = [json.loads(path.read_text()) for path in paths]
    order = {"ours-single": 0, "ours-dspy-cli-layout": 1, "ours-gunicorn": 2, "dspy-cli": 3, "bare-proxy": 4}
    records.sort(
        key=lambda r: (
            str(r.get("program")),
            int(r.get("delay_ms") or 0),
            int(r.get("users") or 0),
            order.get(str(r.get("server")), 9),
            str(r.get("label")),
        )
    )
    sys.stdout.write(markdown_table(records))
    return 0


# Our servers, each compared with dspy-cli and the bare proxy of the same point.
OURS = ("ours-single", "ours-dspy-cli-layout", "ours-gunicorn2")


def point_ratios(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per point (program, delay, users) and server of ours: the issue 13 ratios.

    CPU per request as a multiple of dspy-cli's and of the bare proxy's, requests/s as a multiple
    of dspy-cli's, and requests/s as a share of the latency bound (users / model delay: what a
    server that added nothing would serve), each from the same run of the same point.
    """
    points: dict[tuple[str, int, int], dict[str, dict[str, Any]]] = {}
    for record in records:
        key = (str(record.get("program")), int(record.get("delay_ms") or 0), int(record.get("users") or 0))
        points.setdefault(key, {})[str(record.get("label", "")).split("_", 1)[0]] = record
    rows = []
    for (program, delay, users), servers in sorted(points.items()):
        cli, bare = servers.get("dspy-cli"), servers.get("bare-proxy")
        for name in OURS:
            ours = servers.get(name)
            if ours is None:
                continue
            bound = users * 1000 / delay if delay else None
            rows.append({
                "program": program, "delay_ms": delay, "users": users, "server": name,
                "cpu_vs_dspy_cli": _ratio(ours, cli, "cpu_s_per_1000"),
                "cpu_vs_bare_proxy": _ratio(ours, bare, "cpu_s_per_1000"),
                "rps_vs_dspy_cli": _ratio(ours, cli, "rps"),
                "share_of_bound": round(ours["rps"] / bound, 3) if bound and ours.get("rps") else None,
            })  # fmt: skip
    return rows


def _ratio(ours: dict[str, Any], other: dict[str, Any] | None, key: str) -> float | None:
    if other is None or not other.get(key) or ours.get(key) is None:
        return None
    return round(float(ours[key]) / float(other[key]), 2)


RATIO_COLUMNS = (
    ("program", "program"),
    ("delay_ms", "delay ms"),
    ("users", "users"),
    ("server", "server"),
    ("cpu_vs_dspy_cli", "CPU/req vs dspy-cli"),
    ("cpu_vs_bare_proxy", "CPU/req vs bare proxy"),
    ("rps_vs_dspy_cli", "req/s vs dspy-cli"),
    ("share_of_bound", "share of latency bound"),
)


def command_ratios(args: argparse.Namespace) -> int:
    records = [json.loads(path.read_text()) for path in sorted(Path(args.results_dir).glob("*_server.json"))]
    rows = point_ratios(records)
    if not rows:
        print(f"no point with a server of ours in {args.results_dir}", file=sys.stderr)
        return 1
    sys.stdout.write(markdown_table(rows, RATIO_COLUMNS))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    sample = commands.add_parser("sample", help="sample process trees until SIGTERM")
    sample.add_argument("--pid", action="append", required=True, help="NAME=PID of a tree's root")
    sample.add_argument("--out", required=True)
    sample.add_argument("--interval", type=float, default=0.5)
    sample.add_argument("--ready", help="file created once the first sample is taken")
    sample.set_defaults(func=command_sample)

    report = commands.add_parser("report", help="write results/<LABEL>_server.json and check the mock")
    report.add_argument("--label", required=True)
    report.add_argument("--stats", required=True, help="locust's <LABEL>_stats.csv")
    report.add_argument("--usage", help="the JSON written by `sample`")
    report.add_argument("--mock-stats", required=True, help="the mock's GET /stats after the run")
    report.add_argument("--calls-per-request", type=int, default=1)
    report.add_argument("--meta", action="append", default=[], help="KEY=VALUE to record")
    report.add_argument("--out", required=True)
    report.set_defaults(func=command_report)

    table = commands.add_parser("table", help="Markdown table of results/*_server.json")
    table.add_argument("results_dir")
    table.set_defaults(func=command_table)

    ratios = commands.add_parser("ratios", help="per point: ours vs dspy-cli and the bare proxy")
    ratios.add_argument("results_dir")
    ratios.set_defaults(func=command_ratios)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
