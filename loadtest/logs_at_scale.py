"""A month of logs: the read paths, pruning and the writer on a production-sized ``InferenceLog``.

    python -m loadtest.logs_at_scale --database-url postgres://postgres@127.0.0.1:5432/logs_10m \\
        --rows 10000000 --days 60 --out loadtest/results/logs-10m
    python -m loadtest.logs_at_scale --rows 20000 --days 60      # small: a throw-away SQLite file

1. ``seed``: ``manage.py seed_inference_logs --rows --days`` (``--skip-seed`` reuses the database),
   then ``VACUUM ANALYZE`` on PostgreSQL (what autovacuum does after a bulk load).
2. ``reads``: the mock LLM and this service (one uvicorn process) on that database; over real HTTP,
   ``/api/metrics``, ``/api/logs/{P}`` (first page, pages followed by their ``next`` cursor, a page
   a month back) and, logged in as a superuser, the admin log list with each filter, a search, a
   detail page and the dashboard. Each timed ``--repeat`` times after one untimed warm-up.
3. ``writer``: a subprocess runs the telemetry writer on the same database, offered
   ``--writer-rate`` records/s for ``--writer-seconds``, then a burst: what it writes per second.
4. ``prune``: ``manage.py prune_inference_logs --older-than <--prune-older-than>`` while clients
   keep calling a program; afterwards no row older than the age is left, every row younger is
   still there, and every request answered during the prune has its row, exactly once.

Writes ``<out>/<label>.json`` (everything) and ``<label>.txt`` (the summary and the command).
Exit status 1 when a check fails (a lost row, a non-200 read); the 500 ms goal is reported, not
enforced (the machine may be shared). Processes are started here and stopped by their PID.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from loadtest.servers import ROOT, service_env, start_mock, start_server, stop

PROGRAM = "SimplePredict"  # the busiest seeded program (telemetry.seeding.DEFAULT_PROGRAMS)
LOAD_PROGRAM = "AsyncPredict"
ADMIN_USER, ADMIN_PASSWORD = "bench", "bench-password-1"
GOAL_MS = 500.0
COUNT = "SELECT COUNT(*) FROM telemetry_inferencelog"
LOAD_IDS = "prune-load-%"  # LIKE: the ids of the requests sent during the prune


@dataclass
class Report:
    command: str
    database: str
    rows: int
    started_at: str
    timings: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: dict[str, Any] = field(default_factory=dict)
    writer: dict[str, Any] = field(default_factory=dict)
    prune: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


# -- the database, read from here with plain SQL ---------------------------------------------------


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = url.startswith(("postgres://", "postgresql://"))

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.postgres:
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as connection:
                cursor = connection.execute(sql, params)  # type: ignore[arg-type]
                return cursor.fetchall() if cursor.description else []
        import sqlite3

        connection = sqlite3.connect(self.url.removeprefix("sqlite:///"), timeout=60)
        try:
            return connection.execute(sql.replace("%s", "?"), params).fetchall()
        finally:
            connection.close()

    def scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.query(sql, params)[0][0]

    def stamp(self, moment: datetime) -> Any:
        """A ``created_at`` parameter: aware on PostgreSQL, Django's text form on SQLite."""
        return moment if self.postgres else moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ")


def manage(database: Database, *argv: str, **env: str) -> str:
    environment = {**os.environ, "DATABASE_URL": database.url, "LOG_LEVEL": "WARNING", **env}
    done = subprocess.run(
        [sys.executable, "manage.py", *argv], cwd=ROOT, env=environment, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(argv)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def seed(database: Database, rows: int, days: float, feedback: float, report: Report) -> None:
    manage(database, "migrate", "--noinput", "-v0")
    started = time.perf_counter()
    output = manage(database, "seed_inference_logs", "--rows", str(rows), "--days", f"{days:g}")
    if feedback > 0:
        output += manage(database, "seed_feedback", "--fraction", f"{feedback:g}")
    seeded = time.perf_counter() - started
    started = time.perf_counter()
    if database.postgres:
        database.query("VACUUM ANALYZE telemetry_inferencelog")
        database.query("VACUUM ANALYZE loop_feedback")
    report.seed = {"rows": rows, "days": days, "seed_s": round(seeded, 1),
                   "vacuum_analyze_s": round(time.perf_counter() - started, 1),
                   "output": output.strip().splitlines()[-1]}  # fmt: skip
    print(f"seed: {report.seed['output']}", flush=True)


# -- reads over HTTP -----------------------------------------------------------------------------


def timed(report: Report, name: str, get: Callable[[], httpx.Response], repeat: int) -> httpx.Response:
    """One untimed warm-up, then ``repeat`` timed calls; every answer must be a 200."""
    response = get()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = get()
        samples.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            report.failures.append(f"{name}: {response.status_code} {response.text[:200]}")
            break
    median, worst = statistics.median(samples), max(samples)
    report.timings[name] = {"median_ms": round(median, 1), "max_ms": round(worst, 1), "n": len(samples),
                            "status": response.status_code, "bytes": len(response.content)}  # fmt: skip
    mark = "ok" if worst < GOAL_MS else "SLOW"
    print(f"  {name:<58} median {median:8.1f} ms   max {worst:8.1f} ms   {mark}", flush=True)
    return response


def api_reads(client: httpx.Client, database: Database, report: Report, repeat: int) -> None:
    timed(report, "GET /api/metrics", lambda: client.get("/api/metrics"), repeat)
    timed(report, f"GET /api/metrics/{PROGRAM}", lambda: client.get(f"/api/metrics/{PROGRAM}"), repeat)
    for limit in (50, 1000):
        path = f"/api/logs/{PROGRAM}?limit={limit}"
        first = timed(report, f"GET {path}", lambda path=path: client.get(path), repeat)
    cursor = first.json().get("next")
    if cursor is None:
        print("  (no keyset pagination: /api/logs has no `next`)", flush=True)
        return
    for _ in range(repeat):  # walk on from the first page
        cursor = timed(report, "GET /api/logs/{P}?limit=1000&before=<next> (walk)",
                       lambda cursor=cursor: client.get(f"/api/logs/{PROGRAM}",
                                                        params={"limit": 1000, "before": cursor}), 1
                       ).json()["next"]  # fmt: skip
    deep = month_back_cursor(database)
    if deep is not None:
        params = {"limit": 50, "before": deep}
        name = "GET /api/logs/{P}?limit=50&before=<a month back>"
        timed(report, name, lambda: client.get(f"/api/logs/{PROGRAM}", params=params), repeat)


def month_back_cursor(database: Database) -> str | None:
    """The ``before`` cursor (``<created_at in µs>.<id>``, telemetry.selectors) of a row ~28 days old."""
    moment = datetime.now(tz=UTC) - timedelta(days=28)
    rows = database.query(
        "SELECT id FROM telemetry_inferencelog WHERE program = %s AND created_at < %s "
        "ORDER BY program, created_at DESC, id DESC LIMIT 1",
        (PROGRAM, database.stamp(moment)),
    )
    if not rows:
        return None
    return f"{int(moment.timestamp() * 1_000_000)}.{rows[0][0]}"


@contextmanager
def admin_client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=120, follow_redirects=False) as client:
        client.get("/admin/login/")
        login = client.post(
            "/admin/login/?next=/admin/",
            data={"username": ADMIN_USER, "password": ADMIN_PASSWORD, "next": "/admin/",
                  "csrfmiddlewaretoken": client.cookies["csrftoken"]},
            headers={"Referer": f"{url}/admin/login/"},
        )  # fmt: skip
        if login.status_code != 302:
            raise RuntimeError(f"admin login failed: {login.status_code} {login.text[:300]}")
        yield client


# The filters of issue 24 (telemetry.admin, loop.admin), alone and as a user combines them.
FILTERS = {
    **{f"status={status}": f"?status={status}" for status in (200, 422, 400, 502, 504)},
    **{f"version={version}": f"?version={version}" for version in ("v1", "v2", "v3")},
    f"program={PROGRAM} & status=200": f"?program={PROGRAM}&status=200",
    f"program={PROGRAM} & status=400": f"?program={PROGRAM}&status=400",
    f"program={PROGRAM} & version=v1": f"?program={PROGRAM}&version=v1",
    f"program={PROGRAM} & version=v3": f"?program={PROGRAM}&version=v3",
    "version=v1 & status=502": "?version=v1&status=502",
    **{f"feedback score: {value}": f"?feedback_score={value}" for value in ("any", "low", "high", "none")},
    "has a correction": "?corrected=1",
    "has no correction": "?corrected=0",
    f"program={PROGRAM} & has a correction": f"?program={PROGRAM}&corrected=1",
    f"program={PROGRAM} & score low": f"?program={PROGRAM}&feedback_score=low",
    "version=v2 & has a correction": "?version=v2&corrected=1",
}


def admin_reads(client: httpx.Client, database: Database, report: Report, repeat: int) -> None:
    today = datetime.now(tz=UTC).date()
    tomorrow, week = today + timedelta(days=1), today - timedelta(days=7)
    month, year = today.replace(day=1), today.replace(month=1, day=1)
    request_id, row_id = database.query(
        "SELECT request_id, id FROM telemetry_inferencelog WHERE program = %s ORDER BY program, "
        "created_at, id LIMIT 1", (PROGRAM,))[0]  # fmt: skip
    base = "/admin/telemetry/inferencelog/"
    days7 = f"created_at__gte={week}&created_at__lt={tomorrow}"
    pages = {
        "list": "",
        "list, page 200": "?p=200",
        f"program={PROGRAM}": f"?program={PROGRAM}",
        "success=no": "?success__exact=0",
        f"program={PROGRAM} & success=no": f"?program={PROGRAM}&success__exact=0",
        "today": f"?created_at__gte={today}&created_at__lt={tomorrow}",
        "past 7 days": f"?{days7}",
        "this month": f"?created_at__gte={month}&created_at__lt={tomorrow}",
        "this year": f"?created_at__gte={year}&created_at__lt={tomorrow}",
        f"program={PROGRAM} & past 7 days": f"?program={PROGRAM}&{days7}",
        "success=no & past 7 days": f"?success__exact=0&{days7}",
        "search: request id (oldest row)": f"?q={request_id}",
        **FILTERS,
    }
    for name, query in pages.items():
        timed(report, f"admin log list: {name}", lambda query=query: client.get(base + query), repeat)
    timed(report, "admin log detail", lambda: client.get(f"{base}{row_id}/change/"), repeat)
    for window in ("hour", "day", "week"):
        path = f"/admin/telemetry/programstats/?window={window}"
        timed(report, f"admin dashboard: {window}", lambda path=path: client.get(path), repeat)


# -- the writer ----------------------------------------------------------------------------------


def writer_run(rate: int, seconds: float, burst: int) -> dict[str, Any]:
    """In this process (the ``writer`` subcommand): the telemetry writer at ``rate`` records/s."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dspysite.settings")
    django.setup()
    from django.conf import settings

    from telemetry.storage import inference_logs_write
    from telemetry.writer import TelemetryWriter

    writer = TelemetryWriter(inference_logs_write, max_queue=settings.TELEMETRY_QUEUE_MAX,
                             batch_size=settings.TELEMETRY_BATCH_SIZE,
                             flush_interval_s=settings.TELEMETRY_FLUSH_INTERVAL_S)  # fmt: skip
    writer.start()
    sent, max_depth, tick = 0, 0, 0.01
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        for _ in range(int(rate * elapsed) - sent):
            writer.enqueue(_record(f"writer-{sent}"))
            sent += 1
        max_depth = max(max_depth, writer.depth)
        time.sleep(tick)
    writer.flush(120)
    steady_s = time.monotonic() - started
    for index in range(burst):
        writer.enqueue(_record(f"burst-{index}"))
    burst_started = time.monotonic()
    writer.flush(300)
    burst_s = time.monotonic() - burst_started
    writer.stop()
    return {"offered_per_s": rate, "seconds": seconds, "sent": sent, "written": writer.written,
            "dropped": writer.dropped, "write_errors": writer.write_errors, "max_depth": max_depth,
            "drained_after_s": round(steady_s - seconds, 2), "burst": burst,
            "burst_rows_per_s": round(burst / burst_s)}  # fmt: skip


def _record(request_id: str) -> Any:
    """What the request path hands the writer for one answered ``AsyncPredict`` call."""
    from programs.usage import UsageSnapshot
    from telemetry.records import Body, InferenceRecord

    call = {"model": "openai/mock-model", "prompt_tokens": 320, "completion_tokens": 90, "total_tokens": 410,
            "cost_usd": None, "duration_ms": 41.2, "error": None, "cache_hit": False}  # fmt: skip
    inputs = json.dumps({"question": f"What is the purpose of this ticket? {request_id}"}).encode()
    outputs = json.dumps({"answer": f"Echo: {request_id}"}).encode()
    return InferenceRecord(
        program=LOAD_PROGRAM, model_alias="mock", model="openai/mock-model", request_id=request_id,
        status_code=200, finished_at=time.time(), duration_ms=42.0,
        usage=UsageSnapshot(320, 90, None, (call,)),
        inputs=Body(inputs, len(inputs)), outputs=Body(outputs, len(outputs)), worker="bench:1",
    )  # fmt: skip


def writer_phase(database: Database, args: argparse.Namespace, report: Report) -> None:
    argv = [sys.executable, "-m", "loadtest.logs_at_scale", "writer", "--writer-rate", str(args.writer_rate),
            "--writer-seconds", f"{args.writer_seconds:g}",
            "--writer-burst", str(args.writer_burst)]  # fmt: skip
    env = {**os.environ, "DATABASE_URL": database.url, "LOG_LEVEL": "WARNING"}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        report.failures.append(f"writer: exit {done.returncode}: {done.stderr[-500:]}")
        return
    report.writer = json.loads(done.stdout.strip().splitlines()[-1])
    if report.writer["dropped"] or report.writer["written"] != report.writer["sent"] + report.writer["burst"]:
        report.failures.append(f"writer lost records: {report.writer}")
    print(f"writer: {report.writer}", flush=True)


# -- pruning under load --------------------------------------------------------------------------


@dataclass
class Load:
    """Clients calling a program, each request with its own id, until stopped."""

    url: str
    clients: int
    stop: threading.Event = field(default_factory=threading.Event)
    answered: dict[str, tuple[int, float]] = field(default_factory=dict)  # id -> (status, ms)
    latest: str | None = None
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for index in range(self.clients):
            thread = threading.Thread(target=self._client, args=(index,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def _client(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            count = 0
            while not self.stop.is_set():
                request_id = f"prune-load-{index}-{count}"
                started = time.perf_counter()
                response = client.post(f"/{LOAD_PROGRAM}", json={"question": request_id},
                                       headers={"X-Request-ID": request_id})  # fmt: skip
                self.answered[request_id] = (response.status_code, (time.perf_counter() - started) * 1000)
                self.latest = request_id
                count += 1


def visibility_lags(database: Database, load: Load, done: threading.Event) -> list[float]:
    """Seconds from a request's answer to its row being readable, probed one request at a time."""
    lags = []
    while not done.is_set():
        probe, answered = load.latest, time.monotonic()
        if probe is None:
            time.sleep(0.05)
            continue
        deadline = answered + 60
        while time.monotonic() < deadline and not database.query(
            "SELECT 1 FROM telemetry_inferencelog WHERE request_id = %s", (probe,)
        ):
            time.sleep(0.05)
        lags.append(round(time.monotonic() - answered, 3))
    return lags


def prune_phase(database: Database, url: str, older_than: str, clients: int, report: Report) -> None:
    from telemetry.management.commands.prune_inference_logs import parse_age

    started_at = datetime.now(tz=UTC)
    age = parse_age(older_than)
    gone_before, kept_from = started_at - age, started_at - age + timedelta(minutes=5)
    old = database.scalar(f"{COUNT} WHERE created_at < %s", (database.stamp(gone_before),))
    kept = database.scalar(f"{COUNT} WHERE created_at >= %s", (database.stamp(kept_from),))
    load = Load(url, clients)
    load.start()
    done = threading.Event()
    lags: list[float] = []
    monitor = threading.Thread(target=lambda: lags.extend(visibility_lags(database, load, done)), daemon=True)
    monitor.start()
    time.sleep(3)  # requests already flowing when the prune starts (a load, not a wait for a result)
    before = len(load.answered)
    prune_started = time.perf_counter()
    output = manage(database, "prune_inference_logs", "--older-than", older_than)
    prune_s = time.perf_counter() - prune_started
    during = len(load.answered) - before
    load.finish()
    done.set()
    monitor.join(120)
    check_prune(database, load, gone_before, kept_from, kept, report)
    latencies = sorted(ms for _, ms in load.answered.values())
    report.prune.update({
        "older_than": older_than, "rows_older_before": old, "prune_s": round(prune_s, 1),
        "rows_per_s": round(old / prune_s) if prune_s else None, "output": output.strip(),
        "requests_during_prune": during, "requests_total": len(load.answered),
        "request_ms_p50": round(latencies[len(latencies) // 2], 1),
        "request_ms_p99": round(latencies[int(len(latencies) * 0.99)], 1),
        "request_ms_max": round(latencies[-1], 1),
        "row_visible_after_s_median": statistics.median(lags) if lags else None,
        "row_visible_after_s_max": max(lags) if lags else None, "visibility_probes": len(lags),
    })  # fmt: skip
    print(f"prune: {report.prune}", flush=True)


def check_prune(
    database: Database, load: Load, gone_before: datetime, kept_from: datetime, kept: int, report: Report
) -> None:
    """Nothing older than the age is left, everything younger is, each answered request once."""
    answered = len(load.answered)
    deadline = time.monotonic() + 120
    logged = 0
    while time.monotonic() < deadline:  # the server's writer flushes within its interval
        logged = database.scalar(f"{COUNT} WHERE request_id LIKE %s", (LOAD_IDS,))
        if logged >= answered:
            break
        time.sleep(0.2)
    distinct = database.scalar(
        "SELECT COUNT(DISTINCT request_id) FROM telemetry_inferencelog WHERE request_id LIKE %s", (LOAD_IDS,)
    )
    left_old = database.scalar(f"{COUNT} WHERE created_at < %s", (database.stamp(gone_before),))
    kept_now = database.scalar(
        f"{COUNT} WHERE created_at >= %s AND request_id NOT LIKE %s", (database.stamp(kept_from), LOAD_IDS)
    )
    report.prune.update({"answered": answered, "logged": logged, "distinct_logged": distinct,
                         "rows_older_left": left_old, "rows_younger_before": kept,
                         "rows_younger_after": kept_now})  # fmt: skip
    if not (logged == distinct == answered):
        report.failures.append(f"prune: {answered} requests answered, {logged} rows ({distinct} distinct)")
    if left_old:
        report.failures.append(f"prune: {left_old} row(s) older than the age left")
    if kept_now != kept:
        report.failures.append(f"prune: {kept} younger row(s) before, {kept_now} after")


# -- the whole run -------------------------------------------------------------------------------


def run(args: argparse.Namespace, report: Report, work: Path) -> None:
    database = Database(args.database_url or f"sqlite:///{work / 'logs.sqlite3'}")
    if not args.skip_seed:
        seed(database, args.rows, args.days, args.feedback_fraction, report)
    report.rows = database.scalar(COUNT)
    phases = set(args.phases.split(","))
    mock, mock_url = start_mock(work, delay_ms=args.delay_ms)
    try:
        env = service_env(work, mock_url, DATABASE_URL=database.url, LOG_LEVEL="WARNING")
        if not database.query("SELECT 1 FROM auth_user WHERE username = %s", (ADMIN_USER,)):
            manage(database, "createsuperuser", "--noinput", "--username", ADMIN_USER,
                   "--email", "bench@example.com", DJANGO_SUPERUSER_PASSWORD=ADMIN_PASSWORD)  # fmt: skip
        server, url = start_server(work, env)
        try:
            if "reads" in phases:
                print(f"reads on {report.rows:,} rows:", flush=True)
                with httpx.Client(base_url=url, timeout=120) as client:
                    api_reads(client, database, report, args.repeat)
                with admin_client(url) as client:
                    admin_reads(client, database, report, args.repeat)
            if "writer" in phases:
                writer_phase(database, args, report)
            if "prune" in phases:
                prune_phase(database, url, args.prune_older_than, args.clients, report)
        finally:
            stop(server)
    finally:
        stop(mock)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="all", choices=("all", "writer"))
    parser.add_argument("--database-url", help="PostgreSQL to measure on (default: a throw-away SQLite file)")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--days", type=float, default=60.0)
    parser.add_argument(
        "--feedback-fraction", type=float, default=0.01, help="share of the calls with thumbs (seed_feedback)"
    )
    parser.add_argument("--skip-seed", action="store_true", help="measure the database as it is")
    parser.add_argument(
        "--phases", default="reads,writer,prune", help="comma-separated: reads, writer, prune"
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per read")
    parser.add_argument("--writer-rate", type=int, default=2000)
    parser.add_argument("--writer-seconds", type=float, default=20.0)
    parser.add_argument("--writer-burst", type=int, default=20_000)
    parser.add_argument("--prune-older-than", default="30d")
    parser.add_argument("--clients", type=int, default=8, help="clients calling a program during the prune")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="the mock LLM's answer delay")
    parser.add_argument("--out", type=Path, help="directory for <label>.json and <label>.txt")
    parser.add_argument("--label", default="logs_at_scale")
    args = parser.parse_args(argv)
    if args.mode == "writer":
        print(json.dumps(writer_run(args.writer_rate, args.writer_seconds, args.writer_burst)))
        return 0
    command = shlex.join(["python", "-m", "loadtest.logs_at_scale", *(argv or sys.argv[1:])])
    report = Report(command, "postgresql" if args.database_url else "sqlite", args.rows,
                    datetime.now(tz=UTC).isoformat(timespec="seconds"))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="logs-at-scale-") as work:
        run(args, report, Path(work))
    for failure in report.failures:
        print(f"FAILED: {failure}", flush=True)
    if args.out:
        write_report(report, args.out, args.label)
    return 1 if report.failures else 0


def write_report(report: Report, out: Path, label: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{label}.json").write_text(json.dumps(report.__dict__, indent=2, default=str) + "\n")
    lines = [f"$ {report.command}", f"{report.database}, {report.rows:,} rows, {report.started_at}", ""]
    lines += [f"{name:<60} median {t['median_ms']:8.1f} ms  max {t['max_ms']:8.1f} ms"
              for name, t in report.timings.items()]  # fmt: skip
    lines += ["", f"seed: {report.seed}", f"writer: {report.writer}", f"prune: {report.prune}"]
    lines += [f"FAILED: {failure}" for failure in report.failures]
    (out / f"{label}.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
