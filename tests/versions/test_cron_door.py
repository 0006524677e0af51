"""The cron door runs ``production``: a cron job's calls follow the alias when it moves (no header
to pin them), logged with the version that ran them. Over a real server on the scheduler's fast
clock (a scheduled minute passes in 2 real seconds)."""

import time
from pathlib import Path

import dspy
import httpx

from tests.databases import ServerDatabase, server_database
from tests.support import FIXTURES, Running, project_config, service
from tests.telemetry.conftest import wait_for

CRON_PROJECT = FIXTURES / "cron_project"
P = "Answer"


def cron_versions(database: ServerDatabase) -> list[str]:
    rows = database.query(
        "SELECT version FROM telemetry_inferencelog WHERE source = 'cron' ORDER BY created_at, id"
    )
    return [row[0] for row in rows]


def test_cron_jobs_run_production_and_follow_its_moves(tmp_path: Path, mock: Running) -> None:
    config = project_config(CRON_PROJECT, tmp_path, mock.url)
    env = {
        "CRON_HOOK_LOG": str(tmp_path / "hooks.jsonl"),
        "DSPY_SCHEDULER_TIME_SCALE": "30",
        "DSPY_SCHEDULER_TIME_ORIGIN": str(time.time()),
        "TELEMETRY_FLUSH_INTERVAL_S": "0.2",
    }
    with (
        server_database(tmp_path) as database,
        service(tmp_path, CRON_PROJECT, config, **env, **database.env()) as server,
    ):
        wait_for(lambda: "v1" in cron_versions(database), 30, "a cron call on production (v1)")
        state = {"predict": dspy.Predict("question -> answer").dump_state()}
        state["predict"]["demos"] = [{"question": "CRON-DEMO-Q", "answer": "CRON-DEMO-A"}]
        created = httpx.post(f"{server.url}/api/programs/{P}/versions", json={"state": state}, timeout=30)
        assert created.status_code == 201, created.text
        label = created.json()["version"]
        moved = httpx.put(f"{server.url}/api/programs/{P}/aliases/production", json={"version": label})
        assert moved.status_code == 200, moved.text
        seen = len(cron_versions(database))
        # The next runs' calls are on the new production (a call running at the move may finish on v1).
        wait_for(lambda: label in cron_versions(database)[seen:], 30, f"a cron call on production ({label})")
        prompts = httpx.get(f"{mock.url}/requests", params={"limit": 50}).json()["requests"]
        assert any("CRON-DEMO-Q" in str(body["messages"]) for body in prompts)
        assert set(cron_versions(database)) == {"v1", label}
