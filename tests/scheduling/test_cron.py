"""Cron gateways over real servers: every fire time runs once, however many processes share the database.

The fixture project (tests/fixtures/cron_project) declares two CronGateways on one program. The
scheduler's clock runs 30 times faster (``DSPY_SCHEDULER_TIME_SCALE``, same origin in every
process), so a scheduled minute passes in 2 real seconds while croniter computes every fire time.
The tests wait for recorded runs, stop the servers, then check what the database and the gateways'
hook log say: each fire time once and none skipped, each item one log row and one hook call.
"""

import json
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.apikeys.test_api_keys import admin_client, manage
from tests.databases import ServerDatabase, server_database
from tests.programs.test_startup import start_and_fail
from tests.support import FIXTURES, Running, project_config, service
from tests.telemetry.conftest import graceful_stop, wait_for

pytestmark = pytest.mark.integration

CRON_PROJECT = FIXTURES / "cron_project"
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "dspysite/gunicorn.conf.py"]
PERIOD_S = {"Answer.EveryMinute": 60, "Answer.StopsEarly": 120}


@pytest.fixture
def database(tmp_path: Path) -> Iterator[ServerDatabase]:
    with server_database(tmp_path) as db:
        yield db


@pytest.fixture
def start(tmp_path: Path, mock: Running, database: ServerDatabase) -> Callable[..., Any]:
    """``with start(**env) as server``: the cron project on ``database``, on the shared fast clock."""
    config = project_config(CRON_PROJECT, tmp_path, mock.url)
    shared = {
        "CRON_HOOK_LOG": str(tmp_path / "hooks.jsonl"),
        "DSPY_SCHEDULER_TIME_SCALE": "30",
        "DSPY_SCHEDULER_TIME_ORIGIN": str(time.time()),
        "TELEMETRY_FLUSH_INTERVAL_S": "0.2",
        **database.env(),
    }

    @contextmanager
    def run(command: list[str] | None = None, **env: str) -> Iterator[Running]:
        with service(tmp_path, CRON_PROJECT, config, command, **shared, **env) as server:
            yield server

    return run


def finished_runs(database: ServerDatabase) -> dict[str, int]:
    rows = database.query(
        "SELECT job, COUNT(*) FROM scheduling_cronrun WHERE status <> 'running' GROUP BY job"
    )
    return dict(rows)


def enough_runs(database: ServerDatabase, every_minute: int, stops_early: int) -> Callable[[], bool]:
    def check() -> bool:
        done = finished_runs(database)
        return (
            done.get("Answer.EveryMinute", 0) >= every_minute
            and done.get("Answer.StopsEarly", 0) >= stops_early
        )

    return check


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def check_every_fire_time_ran_once(database: ServerDatabase, hook_log: Path) -> list[dict[str, Any]]:
    """The assertions of exactly once, on what the stopped servers left behind. Returns the runs."""
    columns = ["id", "job", "fire_time", "status", "items", "ok", "failed", "worker", "error"]
    runs = [
        dict(zip(columns, row, strict=True))
        for row in database.query(
            f"SELECT {', '.join(columns)} FROM scheduling_cronrun ORDER BY job, fire_time"
        )
    ]
    assert runs and all(run["status"] != "running" for run in runs), runs

    # Every fire time between the first and the last run has exactly one run: none twice, none skipped.
    by_job: dict[str, list[datetime]] = defaultdict(list)
    for run in runs:
        by_job[run["job"]].append(datetime.fromisoformat(str(run["fire_time"])))
    assert set(by_job) == set(PERIOD_S)
    for job, fire_times in by_job.items():
        steps = {(later - earlier).total_seconds() for earlier, later in pairwise(fire_times)}
        assert steps == {PERIOD_S[job]}, (job, fire_times)

    # Each item that ran is one inference log row from the job; a row of another process is impossible.
    rows = database.query(
        "SELECT request_id, status_code, entry, inputs FROM telemetry_inferencelog WHERE source = 'cron'"
    )
    assert max(Counter(row[0] for row in rows).values()) == 1
    items_by_run: dict[int, dict[int, int]] = defaultdict(dict)
    for request_id, status, entry, inputs in rows:
        run_id, index = request_id.removeprefix("cron-").split(".")
        items_by_run[int(run_id)][int(index)] = status
        assert "_meta" not in _json(inputs) and "question" in _json(inputs)  # stripped before the call
        assert entry == next(run["job"] for run in runs if run["id"] == int(run_id))
    assert set(items_by_run) <= {run["id"] for run in runs}

    for run in runs:
        ran = items_by_run.get(run["id"], {})
        assert len(ran) == run["ok"] + run["failed"], run
        if run["status"] == "interrupted":  # the server stopped during this run
            continue
        if run["job"] == "Answer.EveryMinute":  # one by one; the mock fails the third item only
            assert ran == {0: 200, 1: 200, 2: 502}, run
            assert (run["status"], run["items"], run["ok"], run["failed"]) == ("partial", 3, 2, 1)
        else:  # max_errors=1: the first failure stops the run
            assert ran == {0: 502}, run
            assert (run["status"], run["items"], run["ok"], run["failed"]) == ("failed", 3, 0, 1)
            assert "max_errors=1" in run["error"] and "2 item(s) not run" in run["error"]

    # The gateways: get_pipeline_inputs once per run (a process that lost the claim never fetched),
    # and every item of every fetch reached exactly one hook, with its _meta.
    events = [json.loads(line) for line in hook_log.read_text().splitlines()]
    fetches = Counter(event["job"] for event in events if event["hook"] == "inputs")
    assert fetches == Counter(run["job"].split(".")[1] for run in runs)
    hooks: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for event in events:
        if event["hook"] != "inputs":
            meta = event["inputs"]["_meta"]
            assert meta["item"] not in hooks[meta["fetch"]], event  # one hook per item
            hooks[meta["fetch"]][meta["item"]] = event
    fetched = {event["fetch"]: event["job"] for event in events if event["hook"] == "inputs"}
    assert set(hooks) == set(fetched)
    for fetch, by_item in hooks.items():
        assert sorted(by_item) == [0, 1, 2]
        outcomes = [(by_item[i]["hook"], by_item[i].get("error")) for i in range(3)]
        if fetched[fetch] == "EveryMinute" and ("error", "RunStopped") not in outcomes:  # not interrupted
            assert outcomes == [("complete", None), ("complete", None), ("error", "CallFailed")]
            assert [by_item[i]["output"]["answer"] for i in (0, 1)] == ["Echo: first", "Echo: second"]
        elif fetched[fetch] == "StopsEarly" and outcomes[0] != ("error", "RunStopped"):  # 1st item ran
            assert outcomes == [("error", "CallFailed"), ("error", "RunStopped"), ("error", "RunStopped")]
    return runs


def test_two_gunicorn_workers_run_each_fire_time_once(
    start: Callable[..., Any], database: ServerDatabase, tmp_path: Path
) -> None:
    manage(database, "createsuperuser", "--noinput", "--username", "admin", "--email", "a@example.com")
    with start(GUNICORN, WEB_CONCURRENCY="2") as server:
        wait_for(lambda: server.log().count("Application startup complete") == 2, 90, "both workers")
        # Both workers schedule the jobs and race for each fire time.
        assert server.log().count("Cron job Answer.EveryMinute: schedule '* * * * *'") == 2
        workers = {str(child.pid) for child in psutil.Process(server.process.pid).children()}
        wait_for(enough_runs(database, every_minute=4, stops_early=2), 90, "finished runs")
        with admin_client(server) as admin:  # the runs as the admin shows them
            listing = admin.get("/admin/scheduling/cronrun/?status=failed").text
            listed = re.findall(r'class="field-job"><a href="[^"]*">([^<]+)</a>', listing)
            assert len(listed) >= 2 and set(listed) == {"Answer.StopsEarly"}, listed
            (run_id,) = database.query(
                "SELECT MIN(id) FROM scheduling_cronrun WHERE job = 'Answer.StopsEarly'"
            )[0]
            detail = admin.get(f"/admin/scheduling/cronrun/{run_id}/change/").text
            assert "max_errors=1" in detail and "502 LMServerError" in detail
        assert graceful_stop(server), server.log()
    runs = check_every_fire_time_ran_once(database, tmp_path / "hooks.jsonl")
    assert {run["worker"].rsplit(":", 1)[1] for run in runs} <= workers


def test_separate_servers_on_one_database_run_each_fire_time_once(
    start: Callable[..., Any], database: ServerDatabase, tmp_path: Path
) -> None:
    """Three processes as three machines would be: two schedule, one has DSPY_SCHEDULER=off."""
    with ExitStack() as servers:
        first = servers.enter_context(start())
        wait_for(enough_runs(database, every_minute=1, stops_early=0), 60, "the first server's run")
        second = servers.enter_context(start())
        off = servers.enter_context(start(DSPY_SCHEDULER="off"))
        already = finished_runs(database)
        wait_for(
            enough_runs(database, already["Answer.EveryMinute"] + 4, already.get("Answer.StopsEarly", 0) + 2),
            90,
            "runs while all three serve",
        )
        for server in (first, second, off):
            assert graceful_stop(server), server.log()
    runs = check_every_fire_time_ran_once(database, tmp_path / "hooks.jsonl")
    pids = {str(server.process.pid): server for server in (first, second, off)}
    assert {run["worker"].rsplit(":", 1)[1] for run in runs} <= set(pids) - {str(off.process.pid)}
    assert "Scheduler off (DSPY_SCHEDULER): 2 cron job(s) left to other processes" in off.log()


SLOW_MODULE = """
import os
from pathlib import Path

import dspy
from dspy_cli.gateway import CronGateway


class Slow(CronGateway):
    schedule = {schedule!r}

    async def get_pipeline_inputs(self):
        return [{{"question": f"slow {{i}} [delay=60000]"}} for i in range(3)]

    async def on_complete(self, inputs, output):
        pass


class Patient(dspy.Module):
    gateway = Slow

    def __init__(self):
        super().__init__()
        self.predict = dspy.Predict("question -> answer")

    async def aforward(self, question: str):
        Path(os.environ["SLOW_STARTED"]).touch()  # the test waits for an item in flight
        return await self.predict.acall(question=question)
"""


def slow_project(root: Path, schedule: str) -> Path:
    """A dspy-cli project in ``root``: one cron job whose items take a minute each."""
    package = root / "src" / "slow_programs"
    (package / "modules").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "modules" / "slow.py").write_text(SLOW_MODULE.format(schedule=schedule))
    (root / "dspy.config.yaml").write_text((CRON_PROJECT / "dspy.config.yaml").read_text())
    return root


def test_an_invalid_schedule_stops_start_up_with_one_line(tmp_path: Path) -> None:
    project = slow_project(tmp_path, "61 * * * *")
    result = start_and_fail(tmp_path, DSPY_PROJECT_DIR=str(project), DSPY_CONFIG="")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert errors == [
        "dspy-django: cannot start: slow.py: cron job Patient.Slow: invalid schedule '61 * * * *': "
        "[61 * * * *] is not acceptable, out of range"
    ]
    assert "Traceback" not in result.stderr


def test_a_run_in_progress_at_shutdown_is_recorded_interrupted(
    tmp_path: Path, mock: Running, database: ServerDatabase
) -> None:
    """SIGTERM during a run: no new item starts, the one in flight gets the bound, then is cancelled."""
    project = slow_project(tmp_path, "* * * * *")
    config = project_config(project, tmp_path, mock.url)
    env = {
        "DSPY_SCHEDULER_TIME_SCALE": "30",
        "DSPY_SCHEDULER_TIME_ORIGIN": str(time.time()),
        "DSPY_SCHEDULER_SHUTDOWN_TIMEOUT_S": "1",
        "SLOW_STARTED": str(tmp_path / "started"),
        **database.env(),
    }
    with service(tmp_path, project, config, **env) as server:
        wait_for((tmp_path / "started").exists, 60, "the first item in flight")
        assert graceful_stop(server), server.log()
    ((status, items, ok, failed, error),) = database.query(
        "SELECT status, items, ok, failed, error FROM scheduling_cronrun"
    )
    assert (status, items, ok, failed) == ("interrupted", 3, 0, 0)
    assert error == "cancelled at shutdown after 1 s"
    # The item in flight is logged as cancelled (499); the other two never started.
    rows = database.query("SELECT request_id, status_code FROM telemetry_inferencelog WHERE source = 'cron'")
    assert [(request_id.split(".")[1], status) for request_id, status in rows] == [("0", 499)]
