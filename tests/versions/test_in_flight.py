"""A call already running when its alias moves finishes on the version it started on (its answer's
header, its log row), while the calls after the move run the new target, even when the move drops
the running version from the process's cache (``server.max_loaded_versions: 1``). Over a real
socket; the slow version is the mock's ``[delay=MS]`` marker in its instructions."""

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.databases import server_database
from tests.support import Running, project_config, service
from tests.telemetry.conftest import wait_for
from tests.versions.conftest import SERVICE_PROJECT, Served, last_prompt, manage, state_with_demo
from tests.versions.test_versions import ask, put_alias, register

P = "Optimized"
DELAY_MS = 3000


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, mock: Running) -> Iterator[Served]:
    """One uvicorn process, API keys on, at most one built version per program (besides v1)."""
    tmp = tmp_path_factory.mktemp("in-flight")
    config = project_config(SERVICE_PROJECT, tmp, mock.url, server={"auth": True, "max_loaded_versions": 1})
    with (
        server_database(tmp) as database,
        service(tmp, SERVICE_PROJECT, config, VERSIONS_POLL_S="0.1", **database.env()) as running,
    ):
        yield Served(running, database, config)


@pytest.fixture(scope="module")
def admin(keyed: Served) -> dict[str, str]:
    key = manage(keyed, "apikey", "create", "in-flight-admin", "--scopes", "invoke,read,admin").stdout.strip()
    return {"Authorization": f"Bearer {key}"}


def in_flight(mock: Running) -> int:
    return httpx.get(f"{mock.url}/stats").json()["in_flight"]


def test_a_running_call_finishes_on_its_version_when_the_alias_moves(
    keyed: Served, admin: dict[str, str], mock: Running
) -> None:
    slow = register(
        keyed, admin, state_with_demo("INFLIGHT-Q", "INFLIGHT-A", instructions=f"Answer. [delay={DELAY_MS}]")
    )
    fast = register(keyed, admin, state_with_demo("AFTER-MOVE-Q", "AFTER-MOVE-A"))
    assert put_alias(keyed, admin, "production", {"version": slow}).status_code == 200
    busy = in_flight(mock)
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        running = pool.submit(ask, keyed, admin, "started before the move")
        wait_for(lambda: in_flight(mock) > busy, 10, "the slow call to reach the model")
        assert "INFLIGHT-Q" in last_prompt(mock)  # it runs the slow version's state
        # The move builds ``fast``, which drops ``slow`` from the cache (one built version at most).
        assert put_alias(keyed, admin, "production", {"version": fast}).status_code == 200
        after = ask(keyed, admin, "asked after the move")
        assert after.status_code == 200 and after.headers["X-Program-Version"] == fast
        assert "AFTER-MOVE-Q" in last_prompt(mock)
        assert f"{P}: version {slow} unloaded" in keyed.server.log()  # dropped while its call runs
        assert not running.done()  # the move did not cut the running call short
        answer = running.result(timeout=30)
    assert time.monotonic() - started >= DELAY_MS / 1000
    assert answer.status_code == 200 and answer.headers["X-Program-Version"] == slow

    def row() -> dict | None:
        logs = httpx.get(f"{keyed.url}/api/logs/{P}", params={"limit": 50}, headers=admin).json()["logs"]
        rows = [e for e in logs if (e["inputs"] or {}).get("question") == "started before the move"]
        return rows[0] if rows else None

    assert wait_for(row, 20, "the running call's log row")["version"] == slow
