"""Admission control over real sockets: 429 + Retry-After instead of queues; slots come back."""

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service_fixtures import SERVICE_PROJECT
from tests.support import Running, project_config, service

pytestmark = pytest.mark.integration

LIMIT = 4
THREADS = 3


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, mock: Running) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("limited")
    config = project_config(SERVICE_PROJECT, tmp, mock.url)
    env = {"DSPY_MAX_CONCURRENT_PER_PROGRAM": str(LIMIT), "DSPY_SYNC_WORKER_THREADS": str(THREADS)}
    with service(tmp, SERVICE_PROJECT, config, **env) as running:
        yield running


async def burst(server: Running, program: str, count: int, delay_ms: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        bodies = [{"question": f"{program} {i} {uuid.uuid4()} [delay={delay_ms}]"} for i in range(count)]
        return list(await asyncio.gather(*(client.post(f"/{program}", json=body) for body in bodies)))


def test_excess_over_the_program_limit_gets_429(limited: Running) -> None:
    responses = asyncio.run(burst(limited, "EchoAsync", 3 * LIMIT, delay_ms=1500))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] * LIMIT + [429] * (2 * LIMIT)
    refused = [response for response in responses if response.status_code == 429]
    assert all(response.headers["retry-after"] == "1" for response in refused)
    assert all(response.json()["program"] == "EchoAsync" for response in refused)
    # Every slot came back: a full burst is admitted again.
    again = asyncio.run(burst(limited, "EchoAsync", LIMIT, delay_ms=0))
    assert [response.status_code for response in again] == [200] * LIMIT


def test_sync_programs_are_refused_when_every_thread_is_busy(limited: Running) -> None:
    responses = asyncio.run(burst(limited, "EchoSync", LIMIT, delay_ms=1500))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] * THREADS + [429] * (LIMIT - THREADS)
    (refused,) = [response for response in responses if response.status_code == 429]
    assert "sync worker threads" in refused.json()["detail"]


def test_limits_are_per_program(limited: Running) -> None:
    async def both() -> tuple[list[httpx.Response], list[httpx.Response]]:
        first = burst(limited, "EchoAsync", LIMIT, delay_ms=800)
        second = burst(limited, "SlowAsync", LIMIT, delay_ms=800)
        return await asyncio.gather(first, second)

    first, second = asyncio.run(both())
    assert [r.status_code for r in first + second] == [200] * (2 * LIMIT)


def test_client_disconnect_frees_the_slot(limited: Running) -> None:
    async def scenario() -> int:
        async with httpx.AsyncClient(base_url=limited.url, timeout=0.5) as client:
            hung = [
                client.post("/EchoAsync", json={"question": f"gone {i} [delay=5000]"}) for i in range(LIMIT)
            ]
            for outcome in await asyncio.gather(*hung, return_exceptions=True):
                assert isinstance(outcome, httpx.ReadTimeout)
        # The clients are gone; their slots must be free long before the model would answer.
        async with httpx.AsyncClient(base_url=limited.url, timeout=30) as client:
            responses = await asyncio.gather(
                *(client.post("/EchoAsync", json={"question": f"after {i}"}) for i in range(LIMIT))
            )
            return sum(response.status_code == 200 for response in responses)

    assert asyncio.run(scenario()) == LIMIT


def test_timeouts_free_their_slots(limited: Running) -> None:
    responses = asyncio.run(burst(limited, "SlowAsync", LIMIT, delay_ms=5000))
    assert [response.status_code for response in responses] == [504] * LIMIT
    again = asyncio.run(burst(limited, "SlowAsync", LIMIT, delay_ms=0))
    assert [response.status_code for response in again] == [200] * LIMIT


def test_health_is_never_limited(limited: Running) -> None:
    async def scenario() -> list[int]:
        async with httpx.AsyncClient(base_url=limited.url, timeout=30) as client:
            busy = asyncio.gather(*(burst(limited, "EchoAsync", LIMIT, delay_ms=1000) for _ in range(2)))
            task = asyncio.ensure_future(busy)
            await asyncio.sleep(0)  # let the burst start before probing
            probes = [await client.get("/health/ready") for _ in range(10)]
            await task
            return [probe.status_code for probe in probes]

    assert asyncio.run(scenario()) == [200] * 10


def test_sigterm_drains_in_flight_calls(tmp_path: Path, mock: Running) -> None:
    config = project_config(SERVICE_PROJECT, tmp_path, mock.url)
    with service(tmp_path, SERVICE_PROJECT, config) as running:

        async def scenario() -> tuple[int, int]:
            async with httpx.AsyncClient(timeout=30) as client:
                call = client.post(f"{running.url}/EchoAsync", json={"question": "x [delay=1500]"})
                in_flight = asyncio.ensure_future(call)
                # Wait until the call has reached the model, then ask the server to stop.
                while (await client.get(f"{mock.url}/stats")).json()["in_flight"] == 0:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
                os.kill(running.process.pid, signal.SIGTERM)
                response = await in_flight
                return response.status_code, await asyncio.to_thread(running.process.wait, 30)

        status, exit_code = asyncio.run(scenario())
    assert status == 200
    # uvicorn re-raises SIGTERM once its graceful shutdown is done.
    assert exit_code in (0, -signal.SIGTERM)


def test_full_capacity_after_a_fault_storm(limited: Running) -> None:
    faults = ["500", "429", "malformed", "drop", "badjson"]

    async def storm() -> list[int]:
        async with httpx.AsyncClient(base_url=limited.url, timeout=30) as client:
            calls = [
                client.post(f"/{program}", json={"question": f"storm {fault} [fault={fault}]"})
                for program in ("EchoAsync", "EchoSync")
                for fault in faults
            ]
            calls.append(client.post("/SlowAsync", json={"question": "storm [fault=stall]"}))
            return [response.status_code for response in await asyncio.gather(*calls)]

    statuses = asyncio.run(storm())
    assert statuses.count(200) == 0
    assert set(statuses) <= {502, 503, 504, 429}
    # No slot, thread or connection leaked: every limit admits a full burst again.
    assert [r.status_code for r in asyncio.run(burst(limited, "EchoAsync", LIMIT, 300))] == [200] * LIMIT
    assert [r.status_code for r in asyncio.run(burst(limited, "EchoSync", THREADS, 300))] == [200] * THREADS
    assert [r.status_code for r in asyncio.run(burst(limited, "SlowAsync", LIMIT, 0))] == [200] * LIMIT
