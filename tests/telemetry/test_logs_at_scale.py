"""A month of logs, small, against the real server: a seeded database (``seed_inference_logs`` in
a subprocess, as the load-test kit runs it), ``/api/logs`` pages and ``/api/metrics`` over HTTP,
and ``prune_inference_logs`` in chunks while clients keep calling a program: no row lost.
"""

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.databases import ServerDatabase, server_database
from tests.support import ROOT, Running, service
from tests.telemetry.conftest import SERVICE_PROJECT, wait_for

PROGRAMS = ("EchoSync", "EchoAsync")
ROWS, HOURS = 10_000, 12


def manage(database: ServerDatabase, *argv: str) -> str:
    env = {**os.environ, **database.env(), "LOG_LEVEL": "WARNING"}
    done = subprocess.run(
        [sys.executable, "manage.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def seeded(
    tmp_path_factory: pytest.TempPathFactory, telemetry_config: Path
) -> Iterator[tuple[Running, ServerDatabase]]:
    tmp = tmp_path_factory.mktemp("logs-at-scale")
    with server_database(tmp) as database:
        out = manage(database, "seed_inference_logs", "--rows", str(ROWS), "--days", f"{HOURS / 24}",
                     "--programs", *PROGRAMS)  # fmt: skip
        assert f"Seeded {ROWS:,} inference log row(s)" in out
        env = {**database.env(), "TELEMETRY_FLUSH_INTERVAL_S": "0.2", "TELEMETRY_SHUTDOWN_TIMEOUT_S": "30"}
        with service(tmp, SERVICE_PROJECT, telemetry_config, **env) as server:
            yield server, database


def test_log_pages_over_http_cover_every_row_of_the_program_once(
    seeded: tuple[Running, ServerDatabase],
) -> None:
    server, database = seeded
    expected = [row[0] for row in database.query(
        "SELECT request_id FROM telemetry_inferencelog WHERE program = %s ORDER BY created_at DESC, id DESC",
        ("EchoSync",),
    )]  # fmt: skip
    seen: list[str] = []
    params: dict[str, str | int] = {"limit": 1000}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        while True:
            body = client.get("/api/logs/EchoSync", params=params).json()
            assert body["count"] == len(body["logs"]) <= 1000
            seen += [entry["request_id"] for entry in body["logs"]]
            if body["next"] is None:
                break
            params["before"] = body["next"]
        bad = client.get("/api/logs/EchoSync", params={"before": "yesterday"})
    assert len(expected) > 3000 and seen == expected
    assert bad.status_code == 422 and "before" in bad.text


def test_metrics_over_http_agree_with_the_seeded_rows(seeded: tuple[Running, ServerDatabase]) -> None:
    server, database = seeded
    listing = httpx.get(f"{server.url}/api/metrics", timeout=30).json()["programs"]
    metrics = {entry["program"]: entry for entry in listing}
    for program in PROGRAMS:
        calls, ok, tokens = database.query(
            "SELECT COUNT(*), SUM(CASE WHEN success THEN 1 ELSE 0 END), SUM(total_tokens) "
            "FROM telemetry_inferencelog WHERE program = %s",
            (program,),
        )[0]
        entry = metrics[program]
        assert (entry["call_count"], entry["success_count"], entry["total_tokens"]) == (calls, ok, tokens)
        assert entry["p95_latency_ms"] is not None and entry["lm_call_breakdown"]


@dataclass
class Callers:
    """Clients calling a program until stopped, each request with its own id."""

    url: str
    answered: dict[str, int] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            count = 0
            while not self.stop.is_set():
                request_id = f"during-prune-{index}-{count}"
                response = client.post(
                    "/EchoAsync", json={"question": request_id}, headers={"X-Request-ID": request_id}
                )
                self.answered[request_id] = response.status_code
                count += 1


def test_pruning_in_chunks_while_requests_are_logged_loses_none(
    seeded: tuple[Running, ServerDatabase],
) -> None:
    server, database = seeded
    started = datetime.now(tz=UTC)
    cutoff, margin = started - timedelta(hours=HOURS / 2), timedelta(minutes=5)
    count = "SELECT COUNT(*) FROM telemetry_inferencelog WHERE created_at {} %s AND request_id LIKE %s"
    stamp = (lambda moment: moment) if database.vendor == "postgresql" else _sqlite_time
    old = database.query(count.format("<"), (stamp(cutoff), "seed-%"))[0][0]
    young = database.query(count.format(">="), (stamp(cutoff + margin), "seed-%"))[0][0]
    callers = Callers(server.url)
    threads = [threading.Thread(target=callers.run, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(callers.answered) >= 20, what="requests flowing before the prune")
    before = len(callers.answered)
    out = manage(database, "prune_inference_logs", "--older-than", f"{HOURS // 2}h", "--chunk", "500")
    during = len(callers.answered) - before
    callers.stop.set()
    for thread in threads:
        thread.join(30)
    answered = dict(callers.answered)
    assert set(answered.values()) == {200}
    assert during > 0, "no request was answered while the prune ran"
    deleted, chunks = (int(n) for n in re.search(r"Deleted (\d+) .* in (\d+) chunk", out).groups())
    assert deleted >= old > 2000 and chunks == -(-deleted // 500), out  # 500 rows at a time
    logged = wait_for(
        lambda: _logged(database, len(answered)), what=f"the {len(answered)} requests' rows"
    )  # fmt: skip
    assert logged == sorted(answered)  # each request once: none lost, none twice
    assert database.query(count.format("<"), (stamp(started - timedelta(hours=HOURS / 2)), "%"))[0][0] == 0
    assert database.query(count.format(">="), (stamp(cutoff + margin), "seed-%"))[0][0] == young


def _logged(database: ServerDatabase, expected: int) -> list[str] | None:
    rows = database.query(
        "SELECT request_id FROM telemetry_inferencelog WHERE request_id LIKE %s ORDER BY request_id",
        ("during-prune-%",),
    )
    ids = sorted(row[0] for row in rows)
    return ids if len(ids) >= expected else None


def _sqlite_time(moment: datetime) -> str:
    """Django's text form of an aware datetime in SQLite (UTC, no offset)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ")
