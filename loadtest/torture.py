"""Torture test: requests of every shape over keep-alive connections; not one may vanish.

Issue 16: under load a few requests had their connection closed with no answer and left no
trace. This script starts the mock LLM and this service (one uvicorn process, or gunicorn with
``--workers`` uvicorn workers, as docs/DEPLOYMENT.md runs them; 127.0.0.1 only) and sends, until
``--requests`` well-behaved requests have been answered (or ``--max-seconds`` have passed):

| clients | what they do |
|---|---|
| keep-alive | raw sockets, one request at a time on a persistent connection |
| pipelined | raw sockets writing 2 to 8 requests before reading the answers |
| httpx pool | one ``httpx.AsyncClient`` shared by ``--pool`` tasks (the report's client) |
| pollers | an ``httpx.AsyncClient`` each, pausing just under its pool's 5 s idle expiry |
| cuts | now and then a request on a new connection, closed (FIN or RST) mid-body or after it |

Each well-behaved request goes to ``SimplePredict`` (sync) or ``AsyncPredict`` (native async) at
random, with a question of 0.1 to 64 KB (log-uniform) that starts with its own ``X-Request-ID``;
its answer must be a 200 carrying that id and echoing the question. A transport error, another
status or a wrong answer counts against the run. Cut-off requests expect nothing.

Then the inference log (the server's SQLite database): it waits, bounded, until the answered
requests' rows are flushed, stops the server (which flushes the rest) and checks: exactly one row
per answered request, with its status; none for a request cut off mid-body (it never reached a
program); at most one for any other; no ERROR line in the server's log.

    python -m loadtest.torture                                  # 100,000 requests, both modes
    python -m loadtest.torture --mode single --requests 20000
    python -m loadtest.torture --keep-alive-timeout 5           # the timeout before issue 16's fix

Exit status 0 when every mode passed, 1 otherwise. Processes are started here and stopped by PID.
"""

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loadtest.servers import MODES, StartError, service_env, start_mock, start_server, stop
from loadtest.torture_clients import Budget, Tally, httpx_pool, poller, raw_client

FLUSH_TIMEOUT_S = 60.0


@dataclass
class Options:
    requests: int = 100_000
    max_seconds: float = 3600.0
    keep_alive: int = 32
    pipelined: int = 8
    pool: int = 16
    pollers: int = 40
    poll_reuses: int = 3
    cut_ratio: float = 0.03
    delay_ms: float = 1.0
    seed: int = 16


@dataclass
class Outcome:
    """One mode: the clients' tally, timings, and what the inference log check found."""

    mode: str
    tally: Tally = field(default_factory=Tally)
    duration_s: float = 0.0
    client_cpu_s: float = 0.0  # this script's CPU time while it sent: the load generator's share
    flush_wait_s: float | None = None
    rows: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.tally.failed and not self.problems

    def summary(self) -> dict[str, Any]:
        tally = self.tally
        requests = sum(tally.by_client.values())
        return {
            "mode": self.mode,
            "requests": requests,
            "errors": len(tally.failed),
            "error_kinds": dict(Counter(tally.failed.values()).most_common()),
            "by_client": dict(tally.by_client),
            "cut_mid_body": len(tally.cut_mid_body),
            "cut_after_body": len(tally.cut_after_body),
            "duration_s": round(self.duration_s, 1),
            "requests_per_s": round(requests / max(self.duration_s, 1e-9), 1),
            "client_cpu_s": round(self.client_cpu_s, 1),
            "flush_wait_s": None if self.flush_wait_s is None else round(self.flush_wait_s, 1),
            "rows": self.rows,
            "problems": self.problems[:20],
            "passed": self.passed,
        }


async def drive(url: str, budget: Budget, options: Options, outcome: Outcome) -> None:
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 80)
    seeds = iter(range(options.seed, options.seed + 10_000))

    def rng() -> random.Random:  # one per client: a run is repeatable whatever the timing
        return random.Random(next(seeds))

    clients: list[Awaitable[None]] = []
    clients += [raw_client(address, budget, rng(), 1) for _ in range(options.keep_alive)]
    clients += [raw_client(address, budget, rng(), 8) for _ in range(options.pipelined)]
    clients += [httpx_pool(url, budget, rng(), options.pool)] if options.pool else []
    clients += [poller(url, budget, rng(), options.poll_reuses) for _ in range(options.pollers)]
    started, cpu = time.monotonic(), time.process_time()

    async def progress() -> None:
        while True:
            await asyncio.sleep(10)
            done, elapsed = sum(budget.tally.by_client.values()), time.monotonic() - started
            errors = len(budget.tally.failed)
            print(f"torture: {outcome.mode}: {done:,} requests, {errors} errors, {elapsed:.0f} s", flush=True)

    reporter = asyncio.create_task(progress())
    try:
        await asyncio.gather(*clients)
    finally:
        reporter.cancel()
        outcome.duration_s = time.monotonic() - started
        outcome.client_cpu_s = time.process_time() - cpu
    if budget.issued < options.requests:
        outcome.problems.append(f"only {budget.issued:,} of {options.requests:,} requests sent in time")


def read_rows(database: Path, prefix: str) -> list[tuple[str, int]]:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as db:
        query = "SELECT request_id, status_code FROM telemetry_inferencelog WHERE request_id LIKE ?"
        return db.execute(query, (prefix + "%",)).fetchall()


def wait_for_rows(database: Path, prefix: str, expected: int) -> float | None:
    """Seconds until ``expected`` rows were flushed (polled, bounded); None when they never were."""
    started = time.monotonic()
    while time.monotonic() - started < FLUSH_TIMEOUT_S:
        if len(read_rows(database, prefix)) >= expected:
            return time.monotonic() - started
        time.sleep(0.2)
    return None


def check_rows(tally: Tally, rows: list[tuple[str, int]]) -> list[str]:
    """What is wrong with the inference log of this run's requests."""
    counts = Counter(rid for rid, _ in rows)
    logged = dict(rows)
    sent = tally.answered.keys() | tally.failed.keys() | {*tally.cut_after_body, *tally.cut_mid_body}
    problems = [f"{rid}: {n} log rows" for rid, n in counts.items() if n > 1]
    for rid, status in tally.answered.items():
        if rid not in logged:
            problems.append(f"{rid}: answered {status}, no log row")
        elif logged[rid] != status:
            problems.append(f"{rid}: answered {status}, logged {logged[rid]}")
    problems += [f"{rid}: cut off mid-body, yet logged" for rid in tally.cut_mid_body if rid in logged]
    problems += [f"{rid}: logged, never sent" for rid in logged if rid not in sent]
    return problems


def server_errors(log: Path) -> list[str]:
    lines = log.read_text(errors="replace").splitlines()
    return [f"server log: {line}" for line in lines if " ERROR " in line or "Traceback" in line]


def run_mode(mode: str, work: Path, mock_url: str, options: Options, args: argparse.Namespace) -> Outcome:
    """One server: the load and the flush wait while it runs, then, once stopped, the log check."""
    outcome = Outcome(mode)
    directory = work / mode
    directory.mkdir()
    env = service_env(directory, mock_url, TELEMETRY_CAPTURE_IO="false")  # rows, not 64 KB payloads
    if args.keep_alive_timeout is not None:
        env["KEEP_ALIVE_TIMEOUT"] = str(args.keep_alive_timeout)
    database = directory / "db.sqlite3"
    server, url = start_server(directory, env, mode, args.workers)
    print(f"torture: {mode}: {url} (PID {server.pid}), {options.requests:,} requests", flush=True)
    budget = Budget(options.requests, options.max_seconds, options.cut_ratio)
    outcome.tally = budget.tally
    try:
        asyncio.run(drive(url, budget, options, outcome))
        outcome.flush_wait_s = wait_for_rows(database, budget.prefix, len(budget.tally.answered))
        if outcome.flush_wait_s is None:
            outcome.problems.append(f"the answered requests' rows not flushed within {FLUSH_TIMEOUT_S:g} s")
    finally:
        stop(server, timeout_s=60)  # graceful: the rest is flushed
    rows = read_rows(database, budget.prefix)
    outcome.rows = len(rows)
    outcome.problems += check_rows(budget.tally, rows) + server_errors(directory / f"server-{mode}.log")
    return outcome


def report(outcome: Outcome) -> None:
    s = outcome.summary()
    print(
        f"torture: {s['mode']}: {s['requests']:,} requests in {s['duration_s']:g} s"
        f" ({s['requests_per_s']:g}/s, client CPU {s['client_cpu_s']:g} s),"
        f" {s['errors']} errors {s['error_kinds'] or ''}, by client {s['by_client']};"
        f" cut off {s['cut_mid_body']} mid-body, {s['cut_after_body']} after it;"
        f" {s['rows']:,} log rows (the answered ones flushed in {s['flush_wait_s']} s)"
    )
    for line in outcome.problems[:20]:
        print(f"torture: {s['mode']}: PROBLEM {line}")
    print(f"torture: {s['mode']}: {'PASS' if outcome.passed else 'FAIL'}", flush=True)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Options]:
    d = Options()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--mode", default=",".join(MODES), help="single, production, or both (comma-separated)")
    add("--workers", type=int, default=2, help="gunicorn workers in production mode")
    add("--requests", type=int, default=d.requests, help="well-behaved requests per mode")
    add("--max-seconds", type=float, default=d.max_seconds, help="per mode")
    add("--keep-alive", type=int, default=d.keep_alive, help="raw keep-alive connections")
    add("--pipelined", type=int, default=d.pipelined, help="raw pipelining connections")
    add("--pool", type=int, default=d.pool, help="tasks sharing one httpx client (0: none)")
    add("--pollers", type=int, default=d.pollers, help="httpx clients pausing ~5 s between requests")
    add("--poll-reuses", type=int, default=d.poll_reuses, help="reuses of each poller's connection, at least")
    add("--cut-ratio", type=float, default=d.cut_ratio, help="cut-off requests per keep-alive request")
    add("--delay-ms", type=float, default=d.delay_ms, help="the mock LLM's answer delay")
    add("--seed", type=int, default=d.seed)
    add("--keep-alive-timeout", type=int, help="the server's, in s (default: the project's, 65)")
    add("--json", type=Path, help="also write the summaries here")
    add("--keep", action="store_true", help="keep the work directory (logs, databases)")
    args = parser.parse_args(argv)
    if any(mode not in MODES for mode in args.mode.split(",")):
        parser.error(f"--mode: one or more of {', '.join(MODES)}, comma-separated")
    names = Options.__dataclass_fields__
    return args, Options(**{name: getattr(args, name) for name in names})


def main(argv: list[str] | None = None) -> int:
    args, options = parse_args(argv)
    modes = args.mode.split(",")
    work = Path(tempfile.mkdtemp(prefix="torture-"))
    outcomes: list[Outcome] = []
    mock = None
    try:
        mock, mock_url = start_mock(work, options.delay_ms)
        for mode in modes:
            outcomes.append(run_mode(mode, work, mock_url, options, args))
            report(outcomes[-1])
    except StartError as exc:
        print(f"torture: {exc}", file=sys.stderr)
    finally:
        if mock is not None:
            stop(mock)
    passed = len(outcomes) == len(modes) and all(outcome.passed for outcome in outcomes)
    if args.json:
        args.json.write_text(json.dumps([outcome.summary() for outcome in outcomes], indent=2) + "\n")
    if args.keep or not passed:
        print(f"torture: work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
