"""Compare two locust runs and fail on a regression.

Usage::

    python loadtest/assert_benchmark.py BASELINE_stats.csv CURRENT_stats.csv
    python loadtest/assert_benchmark.py BASELINE_DIR CURRENT_DIR

Both files are locust ``*_stats.csv`` files (as written by ``run_benchmark.sh``); their
``Aggregated`` rows are compared. The run fails (exit 1) when, in CURRENT:

* requests/s dropped more than 10% below the baseline (``--max-rps-drop``),
* p95 latency rose more than 20% above the baseline (``--max-p95-rise``),
* the failure ratio passed 1% (``--max-failure-ratio``).

Given two directories (``run_matrix.sh`` results), every ``<LABEL>_stats.csv`` of the baseline is
compared with the current run of the same label, and a label the current directory lacks is a
failure too: the gate covers every point and mode the baseline has (the ``dspy-cli-layout`` mode
included). dspy-cli's own runs are the reference, not this service, and are skipped.

The comparison is printed either way. A file that is not a locust stats file exits with 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path


class StatsFileError(Exception):
    """A file that cannot be read as a locust ``*_stats.csv``."""


@dataclass(frozen=True)
class RunSummary:
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 1.0


@dataclass(frozen=True)
class Thresholds:
    max_rps_drop: float = 0.10
    max_p95_rise: float = 0.20
    max_failure_ratio: float = 0.01


def read_summary(path: Path) -> RunSummary:
    """The ``Aggregated`` row of a locust stats CSV."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise StatsFileError(f"{path}: {exc.strerror or exc}") from None
    row = next((row for row in rows if row.get("Name") == "Aggregated"), None)
    if row is None:
        raise StatsFileError(f"{path}: no Aggregated row (not a locust *_stats.csv file?)")
    try:
        return RunSummary(
            requests=int(row["Request Count"]),
            failures=int(row["Failure Count"]),
            rps=float(row["Requests/s"]),
            p50_ms=_percentile(row["50%"]),
            p95_ms=_percentile(row["95%"]),
            p99_ms=_percentile(row["99%"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StatsFileError(f"{path}: unexpected Aggregated row ({type(exc).__name__}: {exc})") from None


def _percentile(value: str) -> float:
    # Locust writes N/A when no request was made.
    return float("nan") if value == "N/A" else float(value)


def _change(baseline: float, current: float) -> str:
    if baseline == 0:
        return "n/a"
    return f"{(current - baseline) / baseline:+.1%}"


def _line(name: str, baseline: float, current: float, spec: str) -> str:
    return f"{name:<14}{baseline:>12{spec}}{current:>12{spec}}{_change(baseline, current):>10}"


def compare(baseline: RunSummary, current: RunSummary, limits: Thresholds) -> tuple[list[str], list[str]]:
    """The printed comparison lines and the list of problems (empty when the run passes)."""
    problems: list[str] = []
    if current.requests == 0:
        problems.append("the current run made no request")
    elif baseline.rps > 0 and current.rps < baseline.rps * (1 - limits.max_rps_drop):
        problems.append(
            f"requests/s dropped {(baseline.rps - current.rps) / baseline.rps:.1%} "
            f"(more than {limits.max_rps_drop:.0%}): {baseline.rps:.1f} -> {current.rps:.1f}"
        )
    # NaN (no request) compares false: covered by the "no request" problem above.
    if baseline.p95_ms > 0 and current.p95_ms > baseline.p95_ms * (1 + limits.max_p95_rise):
        problems.append(
            f"p95 rose {(current.p95_ms - baseline.p95_ms) / baseline.p95_ms:.1%} "
            f"(more than {limits.max_p95_rise:.0%}): {baseline.p95_ms:g} ms -> {current.p95_ms:g} ms"
        )
    if current.requests and current.failure_ratio > limits.max_failure_ratio:
        problems.append(
            f"failures {current.failure_ratio:.2%} of requests (more than {limits.max_failure_ratio:.0%}): "
            f"{current.failures} of {current.requests}"
        )
    lines = [
        f"{'':<14}{'baseline':>12}{'current':>12}{'change':>10}",
        _line("requests", baseline.requests, current.requests, "d"),
        _line("requests/s", baseline.rps, current.rps, ".1f"),
        _line("p50 ms", baseline.p50_ms, current.p50_ms, "g"),
        _line("p95 ms", baseline.p95_ms, current.p95_ms, "g"),
        _line("p99 ms", baseline.p99_ms, current.p99_ms, "g"),
        f"{'failures':<14}{baseline.failure_ratio:>12.2%}{current.failure_ratio:>12.2%}",
    ]
    return lines, problems


STATS_SUFFIX = "_stats.csv"
REFERENCE_SERVERS = frozenset({"dspy-cli", "bare-proxy"})


def _server(stats: Path) -> str | None:
    """The server a run measured, from the ``<LABEL>_server.json`` beside its stats (None: unknown)."""
    record = stats.with_name(stats.name.removesuffix(STATS_SUFFIX) + "_server.json")
    try:
        return json.loads(record.read_text()).get("server")
    except (OSError, ValueError, AttributeError):
        return None


def compare_files(baseline_path: Path, current_path: Path, limits: Thresholds, name: str = "") -> list[str]:
    """Print one comparison; returns its problems, each after ``name``."""
    baseline = read_summary(baseline_path)
    current = read_summary(current_path)
    lines, problems = compare(baseline, current, limits)
    print(f"baseline: {baseline_path}\ncurrent:  {current_path}")
    print("\n".join(lines))
    named = [f"{name}{problem}" for problem in problems]
    for problem in named:
        print(f"REGRESSION: {problem}")
    return named


def compare_directories(baseline_dir: Path, current_dir: Path, limits: Thresholds) -> list[str]:
    """Every baseline label against the current run of the same label; returns all problems."""
    labels = sorted(path.name.removesuffix(STATS_SUFFIX) for path in baseline_dir.glob(f"*{STATS_SUFFIX}"))
    if not labels:
        raise StatsFileError(f"{baseline_dir}: no *{STATS_SUFFIX} files")
    problems: list[str] = []
    for label in labels:
        baseline = baseline_dir / f"{label}{STATS_SUFFIX}"
        if _server(baseline) in REFERENCE_SERVERS:
            continue
        current = current_dir / f"{label}{STATS_SUFFIX}"
        if not current.is_file():
            problems.append(f"{label}: not measured (no {current})")
            print(f"REGRESSION: {problems[-1]}")
            continue
        problems += compare_files(baseline, current, limits, name=f"{label}: ")
        print()
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Fail when CURRENT regressed against BASELINE (locust *_stats.csv files, or directories)."
    )
    parser.add_argument("baseline", type=Path)
    parser.add_argument("current", type=Path)
    parser.add_argument("--max-rps-drop", type=float, default=Thresholds.max_rps_drop)
    parser.add_argument("--max-p95-rise", type=float, default=Thresholds.max_p95_rise)
    parser.add_argument("--max-failure-ratio", type=float, default=Thresholds.max_failure_ratio)
    args = parser.parse_args(argv)
    limits = Thresholds(args.max_rps_drop, args.max_p95_rise, args.max_failure_ratio)
    try:
        if args.baseline.is_dir() and args.current.is_dir():
            problems = compare_directories(args.baseline, args.current, limits)
        else:
            problems = compare_files(args.baseline, args.current, limits)
    except StatsFileError as exc:
        print(f"assert_benchmark: {exc}", file=sys.stderr)
        return 2
    print(f"FAIL: {len(problems)} regression(s)" if problems else "OK: within the limits")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
