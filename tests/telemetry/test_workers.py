"""Several worker processes (gunicorn, as in production): totals add up across them."""

import os
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.databases import ServerDatabase
from tests.telemetry.conftest import graceful_stop, log_rows, total_calls, wait_for
from tests.telemetry.test_server import _concurrently

pytestmark = pytest.mark.integration

GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "dspysite/gunicorn.conf.py"]


def _prometheus_total(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def _listening_pids(server: Any) -> list[int]:
    """PIDs of the server's processes that hold a listening socket on its port."""
    port = int(server.url.rsplit(":", 1)[1])
    master = psutil.Process(server.process.pid)
    return sorted(
        process.pid
        for process in [master, *master.children()]
        for conn in process.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
    )


def test_api_metrics_add_up_across_two_worker_processes(
    database: ServerDatabase, start_server: Any, tmp_path: Path
) -> None:
    env = {"WEB_CONCURRENCY": "2", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus")}
    requests = [("/EchoAsync", f"w{i}", {"question": f"w{i} [usage=3,2] [delay=30]"}) for i in range(120)]
    with start_server(database, command=GUNICORN, **env) as server:
        wait_for(lambda: server.log().count("Application startup complete") == 2, 60, "both workers")
        # Without Redis the limits are per worker: the master says so once (not with REDIS_URL).
        warnings = server.log().count("REDIS_URL is not set: API-key quotas")
        assert warnings == (0 if os.environ.get("REDIS_URL") else 1), server.log()
        # Each worker accepts on a socket of its own (REUSE_PORT), so the kernel balances them.
        worker_pids = sorted(child.pid for child in psutil.Process(server.process.pid).children())
        assert _listening_pids(server) == worker_pids
        responses = _concurrently(server, requests)
        assert [r.status_code for r in responses] == [200] * 120

        wait_for(lambda: log_rows(database) == 120, 60, "every row written")
        workers = database.query("SELECT DISTINCT worker FROM telemetry_inferencelog")
        assert len(workers) == 2, workers  # both processes answered part of the load...
        for _ in range(8):  # ...and whichever answers reports the total of both
            with httpx.Client(base_url=server.url, timeout=30) as client:  # a new connection each time
                assert sum(p["call_count"] for p in client.get("/api/metrics").json()["programs"]) == 120
        assert total_calls(server) == 120
        assert _prometheus_total(server.url, "dspy_requests_total") == 120
        assert _prometheus_total(server.url, "dspy_lm_tokens_total") == 120 * 5
        assert graceful_stop(server), server.log()
    assert log_rows(database) == 120
