"""A call already running when its alias moves finishes on the version it started on (its answer's
header, its log row), while the calls after the move run the new target. Over a real socket; the
slow version is the mock's ``[delay=MS]`` marker in its instructions."""

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.support import Running
from tests.telemetry.conftest import wait_for
from tests.versions.conftest import Served, last_prompt, state_with_demo
from tests.versions.test_versions import ask, put_alias, register

P = "Optimized"
DELAY_MS = 3000


def in_flight(mock: Running) -> int:
    return httpx.get(f"{mock.url}/stats").json()["in_flight"]


def test_a_running_call_finishes_on_its_version_when_the_alias_moves(
    keyed: Served, admin: dict[str, str], mock: Running
) -> None:
    slow = register(
        keyed, admin, state_with_demo("INFLIGHT-Q", "INFLIGHT-A", instructions=f"Answer. [delay={DELAY_MS}]")
    )
    assert put_alias(keyed, admin, "production", {"version": slow}).status_code == 200
    busy = in_flight(mock)
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        running = pool.submit(ask, keyed, admin, "started before the move")
        wait_for(lambda: in_flight(mock) > busy, 10, "the slow call to reach the model")
        assert "INFLIGHT-Q" in last_prompt(mock)  # it runs the slow version's state
        assert put_alias(keyed, admin, "production", {"version": "v1"}).status_code == 200
        after = ask(keyed, admin, "asked after the move")
        assert after.status_code == 200 and after.headers["X-Program-Version"] == "v1"
        assert not running.done()  # the move did not cut the running call short
        answer = running.result(timeout=30)
    assert time.monotonic() - started >= DELAY_MS / 1000
    assert answer.status_code == 200 and answer.headers["X-Program-Version"] == slow

    def row() -> dict | None:
        logs = httpx.get(f"{keyed.url}/api/logs/{P}", params={"limit": 50}, headers=admin).json()["logs"]
        rows = [e for e in logs if (e["inputs"] or {}).get("question") == "started before the move"]
        return rows[0] if rows else None

    assert wait_for(row, 20, "the running call's log row")["version"] == slow
