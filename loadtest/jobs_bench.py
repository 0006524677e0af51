"""A batch job's throughput with 1 or more ``jobworker`` processes (docs/JOBS.md, "Measured").

Starts the mock LLM (``--delay-ms``), one uvicorn server and ``--workers`` job workers on a fresh
database (SQLite in the work directory, or ``--database-url`` for PostgreSQL: a database this run
may empty), submits one job of ``--items`` AsyncPredict items and reports the items per second
from the first result to the last, the submit time, and the peak RSS of the server and workers.
Bounded: it stops by itself after ``--timeout-s``.

    .venv/bin/python loadtest/jobs_bench.py --items 10000 --workers 1
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.servers import ROOT, service_env, start_mock, start_server, stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8, help="jobworker --concurrency")
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--timeout-s", type=float, default=1200.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jobs-bench-"))
    mock, mock_url = start_mock(work, args.delay_ms)
    extra = {"DATABASE_URL": args.database_url} if args.database_url else {}
    env = service_env(work, mock_url, **extra)
    server, url = start_server(work, env)
    workers = [_worker(work, env, n, args.concurrency) for n in range(args.workers)]
    try:
        print(json.dumps(_run(url, args, [server, *workers])))
    finally:
        for process in [*workers, server, mock]:
            stop(process)


def _worker(work: Path, env: dict[str, str], n: int, concurrency: int) -> subprocess.Popen:
    log = (work / f"jobworker-{n}.log").open("w")
    argv = [sys.executable, "manage.py", "jobworker", "--concurrency", str(concurrency), "--interval", "0.1"]
    return subprocess.Popen(argv, cwd=ROOT, env={**env, "LOG_LEVEL": "WARNING"}, stdout=log, stderr=log)


def _run(url: str, args: argparse.Namespace, processes: list[subprocess.Popen]) -> dict:
    body = "".join(
        json.dumps({"custom_id": f"c{n}", "inputs": {"question": f"q{n}"}}) + "\n" for n in range(args.items)
    ).encode()
    started = time.monotonic()
    answer = httpx.post(
        f"{url}/api/jobs", params={"program": "AsyncPredict"}, content=body,
        headers={"Content-Type": "application/x-ndjson"}, timeout=600,
    )  # fmt: skip
    answer.raise_for_status()
    submitted_s = time.monotonic() - started
    job_id = answer.json()["id"]
    rss = dict.fromkeys(range(len(processes)), 0)
    first = None
    deadline = time.monotonic() + args.timeout_s
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/api/jobs/{job_id}", timeout=30).json()
        done = job["succeeded"] + job["failed"]
        if first is None and done:
            first = (time.monotonic(), done)
        for n, process in enumerate(processes):
            rss[n] = max(rss[n], psutil.Process(process.pid).memory_info().rss)
        if job["status"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.5)
    finished = time.monotonic()
    start_at, start_done = first or (finished, 0)
    rate = (job["succeeded"] + job["failed"] - start_done) / max(finished - start_at, 1e-9)
    mb = {n: round(peak / 2**20) for n, peak in rss.items()}
    return {
        "items": args.items, "workers": args.workers, "concurrency": args.concurrency,
        "delay_ms": args.delay_ms, "database": "postgresql" if args.database_url else "sqlite",
        "status": job["status"], "succeeded": job["succeeded"], "submit_s": round(submitted_s, 2),
        "items_per_s": round(rate, 1), "server_peak_rss_mb": mb[0],
        "worker_peak_rss_mb": [mb[n] for n in mb if n],
    }  # fmt: skip


if __name__ == "__main__":
    main()
