"""Server CPU per request of the model limits (programs/upstream.py): plain, in-process, Redis.

Starts the mock LLM and one uvicorn process per variant, each serving ``loadtest/fixture_project``
with its ``mock`` model configured differently:

* ``plain``: the fixture as it is (no budget, no circuit, no fallback: the fast path);
* ``memory``: ``rpm``, ``tpm`` and a circuit breaker, state in the process (no ``REDIS_URL``);
* ``redis-rpm``: ``rpm`` only, in Redis (``--redis-url``, default ``redis://127.0.0.1:6379/2``):
  one round trip per LM call (the budget take);
* ``redis``: ``rpm``, ``tpm`` and a circuit breaker in Redis: per LM call a circuit check, one
  take for rpm and tpm, a settle of the tokens (a success through a clean circuit writes
  nothing): three round trips.

The limits are far above the load (nothing is ever refused): what is measured is the checks. The
variants take turns, ``--rounds`` times; in each, ``--calls`` calls of ``--program``,
``--concurrency`` at a time, each checked for its own echo, after ``--warmup`` unmeasured ones,
between two readings of the server's CPU time (user + system). The client runs here, uncounted.

    python -m loadtest.model_limits_cost                  # 3 rounds of 1,000 calls per variant
    python -m loadtest.model_limits_cost --calls 300 --rounds 1 --json cost.json
    python -m loadtest.model_limits_cost --direct       # each check alone, in this process

``--direct`` times the checks themselves on this process's event loop, against the same Redis:
CPU (``time.process_time``) and wall time per check, ``--calls`` times each, no server.

Processes are started here and stopped by their PID; the Redis keys are this run's own (a
random ``RATELIMIT_KEY_PREFIX``), and expire by themselves.
"""

import asyncio
import json
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from loadtest.mcp_cost import http_round, round_options, summary
from loadtest.servers import service_env, start_mock, start_server, stop

ALL_LIMITS = {
    "rpm": 100_000_000,
    "tpm": 10_000_000_000,
    "circuit_breaker": {"failures": 1000, "cooldown_s": 1},
}
# variant -> (the mock model's limits, whether their state is in Redis)
VARIANTS: dict[str, tuple[dict[str, Any], bool]] = {
    "plain": ({}, False),
    "memory": (ALL_LIMITS, False),
    "redis-rpm": ({"rpm": 100_000_000}, True),
    "redis": (ALL_LIMITS, True),
}


def start_variant(variant: str, work: Path, mock_url: str, redis_url: str) -> tuple[Any, str]:
    here = work / variant
    here.mkdir()
    limits, in_redis = VARIANTS[variant]
    extra = {"LOG_LEVEL": "WARNING", "REDIS_URL": redis_url if in_redis else ""}
    extra["RATELIMIT_KEY_PREFIX"] = f"bench-{secrets.token_hex(4)}:"
    env = service_env(here, mock_url, **extra)
    path = Path(env["DSPY_CONFIG"])
    config = yaml.safe_load(path.read_text())
    config["models"]["registry"]["mock"].update(limits)
    path.write_text(yaml.safe_dump(config))
    return start_server(here, env)


def table(rounds: dict[str, list[tuple[float, int]]], calls: int) -> tuple[str, list[dict[str, Any]]]:
    results = []
    for variant, measured in rounds.items():
        results.append({"variant": variant, **summary(measured, calls)})
    plain = results[0]["server_cpu_ms_per_call"]
    lines = [
        "| variant | calls | errors | server CPU ms / call (rounds) | vs plain |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        spread = ", ".join(f"{value:.2f}" for value in result["rounds_ms_per_call"])
        cost = result["server_cpu_ms_per_call"]
        lines.append(
            f"| {result['variant']} | {result['calls']} | {result['errors']} | {cost:.3f} ({spread}) "
            f"| {(cost - plain) * 1000:+.0f} µs |"
        )
    return "\n".join(lines), results


async def direct(redis_url: str, calls: int) -> str:
    """CPU and wall microseconds per check, the async forms, on this loop (one round trip each)."""
    from programs.circuits import ALLOWED
    from programs.model_limits import StoreBudget, StoreCircuit
    from ratelimit.backends.redis import RedisStore

    store = RedisStore(redis_url)
    alias = f"bench-{secrets.token_hex(4)}"
    rpm = StoreBudget(store, alias + "-rpm", 10**9, None, 0, "fail_open")
    both = StoreBudget(store, alias + "-both", 10**9, 10**12, 0, "fail_open")
    circuit = StoreCircuit(store, alias, 1000, 1, "fail_open")

    async def rpm_take() -> None:
        await rpm.areserve(100)

    async def rpm_tpm_take_and_settle() -> None:
        await both.asettle(await both.areserve(100), 80)

    async def circuit_check() -> None:
        await circuit.acheck()

    async def circuit_record_failure_then_success() -> None:
        await circuit.arecord(ALLOWED, False)
        await circuit.arecord(ALLOWED, True)

    lines = ["| check | round trips | CPU µs | wall µs |", "|---|---|---|---|"]
    checks = (
        (rpm_take, 1),
        (rpm_tpm_take_and_settle, 2),
        (circuit_check, 1),
        (circuit_record_failure_then_success, 2),
    )
    for check, trips in checks:
        for _ in range(100):
            await check()  # warm the connection and the scripts
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(calls):
            await check()
        cpu, wall = (time.process_time() - cpu) / calls * 1e6, (time.perf_counter() - wall) / calls * 1e6
        lines.append(f"| {check.__name__} | {trips} | {cpu:.0f} | {wall:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = round_options(__doc__, "calls per variant", calls=1_000, warmup=50)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/2")
    parser.add_argument("--direct", action="store_true", help="time the checks alone (no server)")
    args = parser.parse_args(argv)
    if args.direct:
        print(asyncio.run(direct(args.redis_url, args.calls)))
        return 0

    work = Path(tempfile.mkdtemp(prefix="model-limits-cost-"))
    started: list[Any] = []
    rounds: dict[str, list[tuple[float, int]]] = {variant: [] for variant in VARIANTS}
    try:
        mock, mock_url = start_mock(work, 0)
        started.append(mock)
        servers = {}
        for variant in VARIANTS:
            process, url = start_variant(variant, work, mock_url, args.redis_url)
            started.append(process)
            servers[variant] = (url, psutil.Process(process.pid))
        for number in range(1, args.rounds + 1):
            for variant, (url, process) in servers.items():
                cpu, errors = asyncio.run(http_round(variant, url, process, args))
                rounds[variant].append((cpu, errors))
                print(f"round {number} {variant}: {cpu * 1000 / args.calls:.3f} ms per call, {errors} errors")
    finally:
        for process in reversed(started):
            stop(process)
        shutil.rmtree(work, ignore_errors=True)
    text, results = table(rounds, args.calls)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"program": args.program, "results": results}, indent=2) + "\n")
    return 1 if any(result["errors"] for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
