"""Versions live across two servers x 2 gunicorn workers on one PostgreSQL (tests/cluster.py):
an alias move reaches all four workers within 2 s without a restart, and 20 moves under a 20-way
load fail no request. Needs ``DATABASE_URL=postgres://...``; Redis from ``REDIS_URL`` or its own.
"""

import asyncio
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from tests.cluster import Cluster, cluster, require_cluster_database
from tests.redis_servers import redis_server
from tests.support import Running, project_config
from tests.telemetry.conftest import wait_for
from tests.versions.conftest import SERVICE_PROJECT, state_with_demo

pytestmark = pytest.mark.integration

P = "Optimized"
PROPAGATION_S = 2.0
WORKERS = 4


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory, mock: Running) -> Iterator[Cluster]:
    require_cluster_database()
    tmp = tmp_path_factory.mktemp("versions-cluster")
    config = project_config(SERVICE_PROJECT, tmp, mock.url)
    with ExitStack() as stack:
        redis_url = os.environ.get("REDIS_URL") or stack.enter_context(redis_server(tmp)).url
        yield stack.enter_context(cluster(tmp, config, redis_url))


@pytest.fixture(scope="module")
def v2(nodes: Cluster) -> str:
    state = state_with_demo("CLUSTER-DEMO-QUESTION", "CLUSTER-DEMO-ANSWER")
    created = httpx.post(f"{nodes.urls[0]}/api/programs/{P}/versions", json={"state": state}, timeout=30)
    assert created.status_code == 201, created.text
    return created.json()["version"]


async def sample(urls: list[str], per_server: int = 12) -> list[httpx.Response]:
    """``per_server`` concurrent calls to each server (enough connections to reach both workers)."""
    async with httpx.AsyncClient(timeout=30) as client:
        calls = [
            client.post(f"{url}/{P}", json={"question": f"s{i}"}) for url in urls for i in range(per_server)
        ]
        return await asyncio.gather(*calls)


def workers_of(nodes: Cluster, answers: list[httpx.Response]) -> set[str]:
    """The workers (host:pid, from the log rows) that answered these calls."""
    ids = {answer.headers["X-Request-ID"] for answer in answers}

    def rows() -> list[tuple[str]] | None:
        found = nodes.database.query(
            "SELECT worker FROM telemetry_inferencelog WHERE request_id = ANY(%s)", [list(ids)]
        )
        return found if len(found) == len(ids) else None

    return {worker for (worker,) in wait_for(rows, 15, "the sample's log rows")}


def move(nodes: Cluster, url: str, version: str) -> None:
    moved = httpx.put(f"{url}/api/programs/{P}/aliases/production", json={"version": version}, timeout=30)
    assert moved.status_code == 200, moved.text


def test_an_alias_move_reaches_every_worker_within_2_s(nodes: Cluster, v2: str) -> None:
    move(nodes, nodes.urls[0], "v1")
    wait_for(
        lambda: {a.headers["X-Program-Version"] for a in asyncio.run(sample(nodes.urls))} == {"v1"}, 10, "v1"
    )
    moved_at = time.monotonic()
    move(nodes, nodes.urls[1], v2)
    seen_by_all = None
    while time.monotonic() - moved_at < PROPAGATION_S:
        answers = asyncio.run(sample(nodes.urls))
        if {a.headers["X-Program-Version"] for a in answers} == {v2}:
            seen_by_all = time.monotonic() - moved_at
            break
    assert seen_by_all is not None, (
        f"some worker still answered the old version {PROPAGATION_S} s after the move"
    )
    after = asyncio.run(sample(nodes.urls, per_server=16))
    assert {a.headers["X-Program-Version"] for a in after} == {v2}
    assert len(workers_of(nodes, after)) == WORKERS  # every worker answered, each with the new version
    print(f"alias move seen by every worker after {seen_by_all:.2f} s")


def test_20_alias_moves_under_a_20_way_load_fail_no_request(nodes: Cluster, v2: str) -> None:
    answered: list[tuple[int, str]] = []
    stop = asyncio.Event()

    async def client(index: int) -> None:
        url = nodes.urls[index % 2]
        async with httpx.AsyncClient(timeout=30) as http:
            while not stop.is_set():
                answer = await http.post(f"{url}/{P}", json={"question": f"load {index}"})
                answered.append((answer.status_code, answer.headers.get("X-Program-Version", "")))

    async def mover() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            for index in range(20):
                version = v2 if index % 2 == 0 else "v1"
                put = await http.put(
                    f"{nodes.urls[index % 2]}/api/programs/{P}/aliases/production", json={"version": version}
                )
                assert put.status_code == 200, put.text
                await asyncio.sleep(0.15)  # a pace of moves, not a wait for a result
        stop.set()

    async def run() -> None:
        await asyncio.gather(mover(), *(client(i) for i in range(20)))

    asyncio.run(run())
    statuses = [status for status, _ in answered]
    assert statuses and all(status == 200 for status in statuses), sorted(set(statuses))
    assert {version for _, version in answered} == {"v1", v2}
    print(f"{len(answered)} requests during 20 alias moves, all 200")
