"""Batch jobs end to end: the server takes the upload, ``jobworker`` processes run it on the
engine's real database backend (SQLite; PostgreSQL when DATABASE_URL names it)."""

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.databases import ServerDatabase
from tests.jobs.conftest import job_lines, results, submit, wait_finished, worker_env
from tests.support import ROOT, Running


def test_a_10000_line_job_completes_with_every_custom_id_once(
    server: Running, worker_factory: Callable, database: ServerDatabase
) -> None:
    with worker_factory():
        answer = submit(server.url, job_lines(10_000))
        assert answer.status_code == 202, answer.text
        accepted = answer.json()
        assert accepted["status"] == "queued" and accepted["total"] == 10_000
        job = wait_finished(server.url, accepted["id"], timeout_s=600)
    assert job["status"] == "completed", job
    assert (job["succeeded"], job["failed"], job["progress"]) == (10_000, 0, 1.0)
    assert job["tokens"] > 0 and job["started_at"] and job["finished_at"]
    lines = results(server.url, accepted["id"])
    counts = Counter(line["custom_id"] for line in lines)
    assert len(counts) == 10_000 and set(counts.values()) == {1}
    assert all(line["status"] == 200 and "answer" in line["outputs"] for line in lines)
    # each item is one program call on the call path: one log row each, source "job", the job as entry
    rows = database.query(
        "SELECT COUNT(*) FROM telemetry_inferencelog WHERE source = 'job' AND entry = %s", (accepted["id"],)
    )
    assert rows[0][0] == 10_000


def test_bad_lines_fail_alone(server: Running, worker_factory: Callable) -> None:
    body = (
        job_lines(3)
        + b"this is not json\n"
        + b'{"custom_id": "wrong-field", "inputs": {"nope": 1}}\n'
        + b'{"custom_id": "no-inputs"}\n'
        + job_lines(2, start=3)
    )
    with worker_factory():
        accepted = submit(server.url, body).json()
        job = wait_finished(server.url, accepted["id"], timeout_s=120)
    assert job["status"] == "completed" and (job["succeeded"], job["failed"]) == (5, 3), job
    by_id = {line["custom_id"]: line for line in results(server.url, accepted["id"])}
    assert by_id[None]["status"] == 400 and "Not a JSON line" in by_id[None]["error"]["error"]
    assert by_id["wrong-field"]["status"] == 422
    assert by_id["wrong-field"]["error"]["error_type"] == "ValidationError"
    assert by_id["no-inputs"]["status"] == 400
    assert all(by_id[f"id-{n}"]["status"] == 200 for n in range(5))


def test_a_duplicate_custom_id_is_refused_naming_the_line(server: Running) -> None:
    body = (
        job_lines(700) + json.dumps({"custom_id": "id-3", "inputs": {"question": "again"}}).encode() + b"\n"
    )
    answer = submit(server.url, body)
    assert answer.status_code == 400
    assert answer.json() == {"detail": "line 701: duplicate custom_id 'id-3' (first on line 4)"}
    listing = httpx.get(f"{server.url}/api/jobs").json()["jobs"]
    assert all(job["total"] != 701 for job in listing)  # nothing of it was kept


def test_an_unknown_program_or_no_lines_is_refused(server: Running) -> None:
    assert submit(server.url, job_lines(1), program="Nope").status_code == 404
    empty = submit(server.url, b"\n\n")
    assert empty.status_code == 400 and "no input lines" in empty.json()["detail"]


def test_inputs_url_is_fetched_line_by_line(
    server: Running, worker_factory: Callable, jobs_tmp: Path
) -> None:
    import http.server
    import threading

    body = job_lines(50)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    try:
        request = {"program": "EchoAsync", "inputs_url": f"http://127.0.0.1:{files.server_port}/in.jsonl"}
        with worker_factory():
            answer = httpx.post(f"{server.url}/api/jobs", json=request, timeout=60)
            assert answer.status_code == 202, answer.text
            job = wait_finished(server.url, answer.json()["id"], timeout_s=120)
    finally:
        files.shutdown()
    assert (job["total"], job["succeeded"]) == (50, 50)


def test_results_of_an_unknown_job_are_404(server: Running) -> None:
    answer = httpx.get(f"{server.url}/api/jobs/00000000-0000-0000-0000-000000000000/results")
    assert answer.status_code == 404 and "not found" in answer.json()["detail"]


def test_job_counts_while_queued(server: Running) -> None:
    answer = submit(server.url, job_lines(5))
    job = httpx.get(f"{server.url}/api/jobs/{answer.json()['id']}").json()
    assert job["status"] == "queued" and job["progress"] == 0.0 and job["total"] == 5


def test_the_upload_has_its_own_body_limit_and_other_paths_keep_theirs(server: Running) -> None:
    """The server runs with MAX_BODY_BYTES=65536: a 500 KB upload is taken, a program body is not."""
    upload = job_lines(10_000)
    assert len(upload) > 400_000
    answer = submit(server.url, upload)
    assert answer.status_code == 202, answer.text
    httpx.post(f"{server.url}/api/jobs/{answer.json()['id']}/cancel")
    batch = {"inputs": [{"question": "x" * 1000}] * 70}
    refused = httpx.post(f"{server.url}/EchoAsync/batch", json=batch)
    assert refused.status_code == 413
    assert refused.json() == {"detail": "Request body is larger than 65536 bytes"}


def test_an_upload_of_another_type_is_415(server: Running) -> None:
    answer = httpx.post(f"{server.url}/api/jobs", content=b"a,b\n", headers={"Content-Type": "text/csv"})
    assert answer.status_code == 415 and "application/x-ndjson" in answer.json()["detail"]


def test_manage_py_jobs_submits_reads_cancels_and_prunes(
    server: Running, config: Path, database: ServerDatabase, jobs_tmp: Path
) -> None:
    def manage(*args: str, **env: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", "jobs", *args], cwd=ROOT, env=worker_env(config, database, **env),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    upload = jobs_tmp / "cli.jsonl"
    upload.write_bytes(job_lines(3))
    job_id = json.loads(manage("submit", "EchoAsync", str(upload)))["id"]
    assert json.loads(manage("status", job_id))["status"] == "queued"
    assert httpx.get(f"{server.url}/api/jobs/{job_id}").json()["total"] == 3  # the API sees it
    assert json.loads(manage("cancel", job_id))["status"] == "cancelled"  # nothing was running
    assert manage("results", job_id) == ""
    assert "pruned" in manage("prune", JOBS_RETENTION_DAYS="0")
    assert httpx.get(f"{server.url}/api/jobs/{job_id}").status_code == 404


def test_the_admin_shows_progress_and_item_errors_and_cancels(
    server: Running, worker_factory: Callable, database: ServerDatabase
) -> None:
    from tests.apikeys.test_api_keys import admin_client, manage

    manage(database, "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com")
    with worker_factory(concurrency=2):
        done_id = submit(server.url, job_lines(2) + b'{"custom_id": "broken", "inputs": {}}\n').json()["id"]
        wait_finished(server.url, done_id, timeout_s=120)
    queued_id = submit(server.url, job_lines(4)).json()["id"]  # no worker: stays queued
    with admin_client(server) as admin:
        detail = admin.get(f"/admin/jobs/job/{done_id}/change/").text
        assert '<progress max="100" value="100.0">' in detail and "2 ok, 1 failed" in detail
        assert "broken: 422" in detail
        cancelled = admin.post(
            "/admin/jobs/job/",
            data={"action": "cancel_jobs", "_selected_action": [queued_id],
                  "csrfmiddlewaretoken": admin.cookies["csrftoken"]},
        )  # fmt: skip
        assert cancelled.status_code == 302, cancelled.text[:500]
    assert httpx.get(f"{server.url}/api/jobs/{queued_id}").json()["status"] == "cancelled"


def test_a_worker_serves_its_prometheus_series(server: Running, worker_factory: Callable) -> None:
    from loadtest.servers import free_port

    port = free_port()
    with worker_factory(concurrency=2, args=("--metrics-port", str(port))):
        job_id = submit(server.url, job_lines(5) + b"not json\n").json()["id"]
        wait_finished(server.url, job_id, timeout_s=120)
        exposition = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'dspy_job_items_total{outcome="success",program="EchoAsync"} 5.0' in exposition
    assert 'dspy_job_items_total{outcome="rejected",program="EchoAsync"} 1.0' in exposition
    assert 'dspy_job_item_duration_seconds_count{program="EchoAsync"} 6.0' in exposition
    assert "dspy_jobs_queue_depth " in exposition
