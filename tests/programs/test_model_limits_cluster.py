"""Model limits across two servers (each gunicorn with 2 workers) sharing PostgreSQL and Redis.

Over real sockets, with a mock LLM of this module's own (its per-model counters prove what reached
each model): a model with ``rpm: 40`` under 100 concurrent requests spread over both servers, and
a circuit opened by failures one server saw, open on the other; Redis stopped in the middle (model
limits fail open by default: answered, counted, no 5xx). Needs ``DATABASE_URL=postgres://...`` and
redis-server (tests/cluster.py).
"""

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml

from tests.cluster import Cluster, cluster, require_cluster_database
from tests.redis_servers import RedisServer, redis_server
from tests.support import FIXTURES, Running, mock_llm

pytestmark = pytest.mark.integration

UPSTREAM_PROJECT = FIXTURES / "upstream_project"
COOLDOWN_S = 3  # long enough to look at the other server while the circuit is open


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with mock_llm(tmp_path_factory.mktemp("cluster-models-mock")) as running:
        yield running


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """This module's own Redis: the last test stops it."""
    with redis_server(tmp_path_factory.mktemp("cluster-models-redis")) as server:
        yield server


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory, mock: Running, redis: RedisServer) -> Iterator[Cluster]:
    require_cluster_database()
    tmp = tmp_path_factory.mktemp("cluster-models")
    config = yaml.safe_load((UPSTREAM_PROJECT / "dspy.config.yaml").read_text())
    for entry in config["models"]["registry"].values():
        entry["api_base"] = f"{mock.url}/v1"
    config["models"]["registry"]["breaker"]["circuit_breaker"]["cooldown_s"] = COOLDOWN_S
    path = tmp / "upstream-cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    with cluster(tmp, path, redis.url, project=UPSTREAM_PROJECT) as running:
        yield running


def reached(mock: Running, model: str) -> int:
    return httpx.get(f"{mock.url}/stats/models").json().get(model, 0)


def test_rpm_budget_holds_for_the_whole_cluster(nodes: Cluster, mock: Running) -> None:
    """rpm 40, 100 requests at once over both servers (4 workers): exactly 40 reach the model."""

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            calls = [
                client.post(f"{nodes.urls[i % 2]}/Budgeted", json={"question": f"cluster {i}"})
                for i in range(100)
            ]
            return list(await asyncio.gather(*calls))

    responses = asyncio.run(burst())

    assert reached(mock, "budgeted-model") == 40
    answered = [response for response in responses if response.status_code == 200]
    refused = [response for response in responses if response.status_code != 200]
    assert len(answered) == 40
    assert {response.status_code for response in refused} == {429}
    for response in refused:
        assert response.json()["error_type"] == "ModelBudget"
        assert 1 <= int(response.headers["retry-after"]) <= 61
    # Both servers answered some of the 40: the budget is shared, not each server's.
    assert {str(response.request.url).rsplit("/", 1)[0] for response in answered} == set(nodes.urls)


def test_failures_seen_by_one_server_open_the_circuit_on_the_other(nodes: Cluster, mock: Running) -> None:
    first, second = nodes.urls
    httpx.post(f"{mock.url}/faults", json={"model": "breaker-model", "then": "500"}).raise_for_status()
    try:
        statuses = [
            httpx.post(f"{first}/Breaker", json={"question": f"down {i}"}, timeout=30).status_code
            for i in range(3)
        ]
        assert statuses == [502, 502, 502]
        assert reached(mock, "breaker-model") == 3

        for program in ("Breaker", "BreakerSync"):  # the other server, async and sync programs
            refused = httpx.post(f"{second}/{program}", json={"question": "down?"}, timeout=30)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error_type"] == "CircuitOpen"
        assert reached(mock, "breaker-model") == 3  # no upstream call while it is open
    finally:
        httpx.delete(f"{mock.url}/faults").raise_for_status()

    # After the cooldown, one trial call (on the second server) closes it for both.
    deadline = time.monotonic() + COOLDOWN_S + 10
    while (
        trial := httpx.post(f"{second}/Breaker", json={"question": "back?"}, timeout=30)
    ).status_code == 503:
        assert time.monotonic() < deadline, "no trial call was let through after the cooldown"
        time.sleep(0.05)
    assert trial.status_code == 200
    assert reached(mock, "breaker-model") == 4
    assert httpx.post(f"{first}/BreakerSync", json={"question": "closed"}, timeout=30).status_code == 200
    assert reached(mock, "breaker-model") == 5


def store_errors(url: str) -> float:
    """``dspy_ratelimit_store_errors_total{kind="models", mode="fail_open"}`` of one server."""
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if (
            line.startswith("dspy_ratelimit_store_errors_total{")
            and 'kind="models"' in line
            and "fail_open" in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_redis_stopped_model_limits_fail_open_counted_then_shared_again(
    nodes: Cluster, mock: Running, redis: RedisServer
) -> None:
    """Last in the module: it stops the cluster's Redis (and starts it again)."""
    before = [store_errors(url) for url in nodes.urls]
    redis.stop()
    try:
        for url in nodes.urls:  # a budget and a circuit that cannot be checked: skipped, not a 5xx
            for program in ("Budgeted", "Breaker", "BreakerSync"):
                response = httpx.post(f"{url}/{program}", json={"question": "redis down"}, timeout=30)
                assert response.status_code == 200, response.text
        after = [store_errors(url) for url in nodes.urls]
        assert all(now > then for now, then in zip(after, before, strict=True)), (before, after)
    finally:
        redis.start()
    # Back: checked again. A restarted Redis starts empty: within the new minute, request 41 is refused.
    deadline = time.monotonic() + 30
    while (
        response := httpx.post(f"{nodes.urls[0]}/Budgeted", json={"question": "back"}, timeout=30)
    ).status_code != 429:
        assert response.status_code == 200, response.text
        assert time.monotonic() < deadline, "the budget was not checked again after Redis came back"
        time.sleep(0.1)
