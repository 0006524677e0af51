"""Workers that die, drain and are cancelled under: two ``jobworker`` processes on one database."""

import os
import signal
import uuid
from collections import Counter
from collections.abc import Callable

import httpx

from tests.databases import ServerDatabase
from tests.jobs.conftest import job_lines, results, submit, wait_finished, wait_for
from tests.support import Running

CONCURRENCY = 8


def slow(n: int) -> dict:
    return {"question": f"q{n} [delay=40]"}  # the mock answers after 40 ms


def _job_key(database: ServerDatabase, job_id: str) -> str:
    return job_id if database.vendor == "postgresql" else uuid.UUID(job_id).hex


def _items(database: ServerDatabase, job_id: str, where: str, *params: object) -> int:
    """How many of the job's items match ``where`` (SQL, ``%s`` placeholders)."""
    sql = f"SELECT COUNT(*) FROM jobs_jobitem WHERE job_id = %s AND {where}"
    return database.query(sql, (_job_key(database, job_id), *params))[0][0]


def _progress(url: str, job_id: str) -> int:
    job = httpx.get(f"{url}/api/jobs/{job_id}", timeout=10).json()
    return job["succeeded"] + job["failed"]


def test_kill_9_of_a_worker_mid_job_still_gives_every_custom_id_once(
    server: Running, worker_factory: Callable, database: ServerDatabase, mock: Running
) -> None:
    total = 2000
    httpx.post(f"{mock.url}/stats/reset")
    with worker_factory(concurrency=CONCURRENCY) as doomed, worker_factory(concurrency=CONCURRENCY):
        job_id = submit(server.url, job_lines(total, program_inputs=slow)).json()["id"]
        wait_for(lambda: _progress(server.url, job_id) >= 400, 300, step_s=0.1)
        running = _items(database, job_id, "state = 'running' AND lease_owner LIKE %s", f"%:{doomed.pid}:%")
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait()
        job = wait_finished(server.url, job_id, timeout_s=300)
    assert job["status"] == "completed" and job["succeeded"] == total, job
    lines = results(server.url, job_id)
    counts = Counter(line["custom_id"] for line in lines)
    assert len(lines) == total and len(counts) == total and set(counts.values()) == {1}
    # At most the items in flight at the kill ran twice (the killed worker's concurrency).
    twice = _items(database, job_id, "attempts > 1")
    assert twice <= CONCURRENCY, twice
    upstream = httpx.get(f"{mock.url}/stats").json()["requests"]
    assert total <= upstream <= total + CONCURRENCY, (upstream, twice, running)
    print(f"kill -9: {running} running at the kill, {twice} run twice, {upstream - total} upstream twice")


def test_cancel_stops_new_items(server: Running, worker_factory: Callable, database: ServerDatabase) -> None:
    with worker_factory(concurrency=4):
        job_id = submit(server.url, job_lines(3000, program_inputs=slow)).json()["id"]
        wait_for(lambda: _progress(server.url, job_id) >= 50, 120, step_s=0.1)
        answer = httpx.post(f"{server.url}/api/jobs/{job_id}/cancel", timeout=30)
        assert answer.status_code == 200 and answer.json()["status"] in ("cancelling", "cancelled")
        started = _items(database, job_id, "attempts > 0")
        job = wait_finished(server.url, job_id, timeout_s=120)
        started_after = _items(database, job_id, "attempts > 0")
    assert job["status"] == "cancelled"
    assert started_after == started  # no item started after the cancel's answer
    assert job["succeeded"] + job["failed"] == started < 3000
    assert len(results(server.url, job_id)) == started
    again = httpx.post(f"{server.url}/api/jobs/{job_id}/cancel", timeout=30)
    assert again.status_code == 409


def test_sigterm_drains_a_worker_and_another_finishes_the_job(
    server: Running, worker_factory: Callable, database: ServerDatabase
) -> None:
    total = 600
    with worker_factory(concurrency=4) as first:
        job_id = submit(server.url, job_lines(total, program_inputs=slow)).json()["id"]
        wait_for(lambda: _progress(server.url, job_id) >= 50, 120, step_s=0.1)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
    held = _items(database, job_id, "state IN ('leased', 'running')")
    assert held == 0  # drained: its running items stored, its leased ones handed back
    with worker_factory(concurrency=4):
        job = wait_finished(server.url, job_id, timeout_s=300)
    assert job["status"] == "completed" and job["succeeded"] == total
    twice = _items(database, job_id, "attempts > 1")
    assert twice == 0


def test_retry_runs_the_failed_items_again(server: Running, worker_factory: Callable) -> None:
    body = job_lines(3) + b'{"custom_id": "bad", "inputs": {"nope": 1}}\n'
    with worker_factory(concurrency=2):
        job_id = submit(server.url, body).json()["id"]
        assert wait_finished(server.url, job_id, timeout_s=120)["failed"] == 1
        answer = httpx.post(f"{server.url}/api/jobs/{job_id}/retry", timeout=30)
        assert answer.status_code == 200 and answer.json()["status"] == "running"
        job = wait_finished(server.url, job_id, timeout_s=120)
    assert (job["succeeded"], job["failed"]) == (3, 1)
    assert Counter(line["custom_id"] for line in results(server.url, job_id)) == Counter(
        {"id-0": 1, "id-1": 1, "id-2": 1, "bad": 1}
    )
