"""What the API-key quotas cost per request, with Redis on loopback: the store alone, then the server.

1. ``store``: the store calls a request with every quota and one LM call makes (admission: one
   all-or-nothing script taking a leased slot and a request, checking tokens and dollars; the LM
   call: one script reserving its bound's tokens and dollars, one settling them; the end: one
   script releasing the slot), then the LM call's two alone (``apikeys.token_reservations``, with
   the bound of a six-demo prompt computed each time), ``--calls`` times one after the other on
   the event loop, as the server makes them. Reported per request (or LM call): wall time
   (microseconds), this process's CPU, and Redis's own CPU (``INFO cpu``). Then the in-process
   store, for comparison.
2. ``server``: one uvicorn process (``loadtest/servers.py``) with API keys on and ``REDIS_URL``,
   serving ``AsyncPredict`` from the mock; ``--calls`` requests with a key without quotas, then
   with a key with all four (limits too high to refuse), ``--concurrency`` at a time, in
   ``--rounds`` alternating rounds. Reported: server CPU per request (psutil, user + system) and
   Redis CPU per request, each key; the difference is what the quotas cost the server.

    python -m loadtest.quota_cost                                   # Redis at 127.0.0.1:6379/1
    python -m loadtest.quota_cost --redis-url redis://127.0.0.1:6380/0 --calls 2000 --rounds 3

Loopback only (the Redis URL must name 127.0.0.1 or localhost); bounded by ``--calls`` and
``--rounds``; the processes it starts are stopped by PID. It uses keys under its own prefix.
"""

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import psutil
import redis

from loadtest.servers import ROOT, service_env, start_mock, start_server, stop

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dspysite.settings")


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def store_round(store: Any, calls: int) -> None:
    """A request with all four quotas and one LM call: admission, the call's reserve and settle, release."""
    from ratelimit import SlotClaim
    from ratelimit.windows import Charge

    claim = SlotClaim("bench:inflight", 1_000_000, 120)
    admission = [
        Charge("bench:rpm", 1, 1e12, 60),
        Charge("bench:tokens", 0, 1e15, 86400),
        Charge("bench:usd", 0, 1e9, 30 * 86400),
    ]
    call = [Charge("bench:tokens", 7000, 1e15, 86400), Charge("bench:usd", 0.004, 1e9, 30 * 86400)]
    for i in range(calls):
        _, slot = await store.atake_with_slot(admission, claim)
        decisions = await store.atake_all(call)
        settlements = [(decisions[0].reservation, 1500.0 + i % 7), (decisions[1].reservation, 0.0002)]
        await store.asettle_all(settlements)
        await store.arelease(claim.key, slot.lease_id)


def six_demo_call() -> Any:
    """A prepared DSPy call shaped like an optimized program's: a system message, six ~1 KB demos."""
    from types import SimpleNamespace

    demo = "why is the sky blue? " * 24
    messages = [{"role": "system", "content": "Your input fields are: question. " * 10}]
    for i in range(6):
        messages += [{"role": "user", "content": f"[[ ## question ## ]]\n{i} {demo}"}]
        messages += [{"role": "assistant", "content": f"[[ ## answer ## ]]\n{i} {demo}"}]
    messages.append({"role": "user", "content": "[[ ## question ## ]]\nthe question"})
    legacy = {"model": "openai/m", "messages": messages, "max_tokens": 50, "temperature": 0.0}
    return SimpleNamespace(request=None, legacy=legacy, prompt=None)


async def lm_call_round(store: Any, calls: int) -> None:
    """An LM call's part alone: its bound computed, priced, reserved, settled (the key's gate)."""
    from types import SimpleNamespace

    from apikeys.token_reservations import KeyQuotaGate
    from programs.lm_gates import CallBound
    from programs.pricing import Prices, call_token_bound

    gate = KeyQuotaGate(store, 0, 10**15, 1e9)
    call, lm, prices = six_demo_call(), SimpleNamespace(kwargs={}), Prices(0.15e-6, 0.6e-6)
    for i in range(calls):
        prompt, completion = call_token_bound(lm, call)
        ticket = await gate.areserve(CallBound(prompt + completion, prices.cost(prompt, completion)))
        await gate.asettle(ticket, 1500 + i % 7, 0.0002)


def measure_store(redis_url: str, calls: int) -> list[dict[str, Any]]:
    import django

    django.setup()
    from ratelimit.backends.memory import MemoryStore
    from ratelimit.backends.redis import RedisStore

    client = redis.Redis.from_url(redis_url)
    results = []
    for name, store in (
        ("redis", RedisStore(redis_url, prefix=f"qcost-{uuid.uuid4().hex[:6]}:")),
        ("memory", MemoryStore()),
    ):
        for what, round_ in (("request, 1 LM call", store_round), ("LM call's gate", lm_call_round)):
            asyncio.run(round_(store, 100))  # warm-up: connections, scripts loaded
            server_cpu, cpu, wall = redis_cpu(client), time.process_time(), time.perf_counter()
            asyncio.run(round_(store, calls))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            row = {
                "store": f"{name}: {what}",
                "requests": calls,
                "wall_us": wall / calls * 1e6,
                "client_cpu_us": cpu / calls * 1e6,
            }
            if name == "redis":
                row["redis_cpu_us"] = (redis_cpu(client) - server_cpu) / calls * 1e6
            results.append(row)
    return results


def create_key(env: dict[str, str], name: str, *quota: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", "apikey", "create", name, *quota],
        cwd=ROOT, env={**env, "LOG_LEVEL": "WARNING"}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip().splitlines()[-1]


async def drive(url: str, key: str, calls: int, concurrency: int) -> int:
    """``calls`` requests of AsyncPredict, ``concurrency`` at a time; the number of non-200 answers."""
    pending = iter(range(calls))
    failed = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(url, connector=connector, headers=headers) as session:

        async def worker() -> None:
            nonlocal failed
            for i in pending:
                async with session.post("/AsyncPredict", json={"question": f"quota cost {i}"}) as response:
                    await response.read()
                    failed += response.status != 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failed


def measure_server(redis_url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="quota-cost-"))
    mock = server = None
    client = redis.Redis.from_url(redis_url)
    totals = {"no quotas": [0.0, 0.0, 0], "all four quotas": [0.0, 0.0, 0]}
    try:
        mock, mock_url = start_mock(work, 0)
        env = service_env(
            work,
            mock_url,
            DSPY_AUTH="true",
            REDIS_URL=redis_url,
            RATELIMIT_KEY_PREFIX=f"qcost-{uuid.uuid4().hex[:6]}:",
        )
        keys = {
            "no quotas": create_key(env, "plain"),
            "all four quotas": create_key(
                env, "limited", "--rpm", "10000000", "--tokens-per-day", "100000000000",
                "--budget-usd", "1000000", "--max-in-flight", "100000",
            ),
        }  # fmt: skip
        server, url = start_server(work, env, "single")
        process = psutil.Process(server.pid)
        for key in keys.values():  # warm-up: the key cache, connections, scripts
            asyncio.run(drive(url, key, 200, args.concurrency))
        for _ in range(args.rounds):
            for name, key in keys.items():
                times, redis_before = process.cpu_times(), redis_cpu(client)
                failed = asyncio.run(drive(url, key, args.calls, args.concurrency))
                after = process.cpu_times()
                totals[name][0] += (after.user + after.system) - (times.user + times.system)
                totals[name][1] += redis_cpu(client) - redis_before
                totals[name][2] += failed
    finally:
        for process_ in (server, mock):
            if process_ is not None:
                stop(process_)
        shutil.rmtree(work, ignore_errors=True)
    requests = args.calls * args.rounds
    return [
        {
            "key": name,
            "requests": requests,
            "errors": failed,
            "server_cpu_us": cpu / requests * 1e6,
            "redis_cpu_us": redis_seconds / requests * 1e6,
        }
        for name, (cpu, redis_seconds, failed) in totals.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/1")
    parser.add_argument("--calls", type=int, default=2000, help="requests per measurement (and per round)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--skip-server", action="store_true", help="only the store measurement")
    args = parser.parse_args(argv)
    if urlsplit(args.redis_url).hostname not in ("127.0.0.1", "localhost"):
        parser.error("loopback only: the Redis URL must name 127.0.0.1 or localhost")

    print("| store | requests | wall us / request | client CPU us / request | Redis CPU us / request |")
    print("|---|---|---|---|---|")
    for row in measure_store(args.redis_url, args.calls):
        redis_us = f"{row['redis_cpu_us']:.1f}" if "redis_cpu_us" in row else "-"
        print(
            f"| {row['store']} | {row['requests']} | {row['wall_us']:.1f} "
            f"| {row['client_cpu_us']:.1f} | {redis_us} |"
        )
    if args.skip_server:
        return 0
    print()
    print("| key | requests | errors | server CPU us / request | Redis CPU us / request |")
    print("|---|---|---|---|---|")
    for row in measure_server(args.redis_url, args):
        print(
            f"| {row['key']} | {row['requests']} | {row['errors']} "
            f"| {row['server_cpu_us']:.0f} | {row['redis_cpu_us']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
