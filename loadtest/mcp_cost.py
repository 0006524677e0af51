"""Server CPU per program call: MCP tool calls next to the plain HTTP route, on one server process.

Starts the mock LLM and one uvicorn process serving ``loadtest/fixture_project`` (the helpers of
``loadtest/servers.py``), then for each door in turn sends ``--calls`` calls of ``--program``,
``--concurrency`` at a time, each with its own question whose echo must come back, and reads the
server's CPU time (user + system, psutil) right before and right after them. The doors:

* ``http``: ``POST /{program}`` (aiohttp, keep-alive);
* ``mcp-2026-07-28``: ``tools/call`` from the SDK's client pinned to the 2026-07-28 revision;
* ``mcp-legacy``: the same after the initialize handshake (the SDK's newest handshake revision).

The doors take turns, ``--rounds`` times, so that a machine whose load changes during the run
weighs on each of them alike. In a round, the MCP calls of a door share one client session, as an
agent's would, and ``--warmup`` calls run first, unmeasured. The client runs in this process: its
CPU is not counted.

    python -m loadtest.mcp_cost                       # 3 rounds of 1,000 calls per door, 20 at a time
    python -m loadtest.mcp_cost --calls 300 --rounds 1 --program SimplePredict --json cost.json

Processes are started here and stopped by their PID; nothing else is touched.
"""

import argparse
import asyncio
import itertools
import json
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from mcp import Client

from loadtest.servers import service_env, start_mock, start_server, stop

DOORS = ("http", "mcp-2026-07-28", "mcp-legacy")
Call = Callable[[str], Awaitable[str]]  # question -> the answer that came back


def cpu_seconds(server: psutil.Process) -> float:
    times = server.cpu_times()
    return times.user + times.system


async def drive(call: Call, questions: list[str], concurrency: int) -> int:
    """Send every question, ``concurrency`` in flight; the number of wrong or failed answers."""
    pending = iter(questions)
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for question in pending:
            try:
                if question not in await call(question):
                    errors += 1
            except Exception:  # noqa: BLE001 - counted: a failed call is a wrong answer here
                errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return errors


async def timed_round(
    label: str, call: Call, server: psutil.Process, args: argparse.Namespace
) -> tuple[float, int]:
    """``args.warmup`` calls, then ``args.calls`` measured: (server CPU seconds, wrong answers).

    Shared by the kit's cost scripts (trace_cost, model_limits_cost): each question is new.
    """
    counter = itertools.count()

    def questions(count: int) -> list[str]:
        return [f"{label} question {next(counter)}: what is the answer?" for _ in range(count)]

    await drive(call, questions(args.warmup), args.concurrency)
    cpu = cpu_seconds(server)
    errors = await drive(call, questions(args.calls), args.concurrency)
    return cpu_seconds(server) - cpu, errors


async def http_round(
    label: str, url: str, server: psutil.Process, args: argparse.Namespace
) -> tuple[float, int]:
    """:func:`timed_round` through ``POST /{args.program}`` (aiohttp, keep-alive)."""
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(url, connector=connector) as session:

        async def post(question: str) -> str:
            async with session.post(f"/{args.program}", json={"question": question}) as response:
                return str((await response.json()).get("answer"))

        return await timed_round(label, post, server, args)


async def measure(door: str, url: str, server: psutil.Process, args: argparse.Namespace) -> tuple[float, int]:
    """One round of ``door``: (server CPU seconds, wrong answers) for ``args.calls`` calls."""
    if door == "http":
        return await http_round(door, url, server, args)
    async with Client(f"{url}/mcp", mode=door.removeprefix("mcp-")) as client:

        async def call_tool(question: str) -> str:
            result = await client.call_tool(args.program, {"question": question})
            return "" if result.is_error else str(result.structured_content["answer"])

        return await timed_round(door, call_tool, server, args)


def round_options(doc: str | None, per: str, calls: int, warmup: int) -> argparse.ArgumentParser:
    """The options every cost script's rounds take (``per``: "calls per door", ...)."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=calls, help=f"measured {per} and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=warmup, help=f"unmeasured {per} and round")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--program", default="AsyncPredict", help="AsyncPredict, SimplePredict or MultiStep")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser


def summary(rounds: list[tuple[float, int]], calls: int) -> dict[str, Any]:
    """Rounds of (server CPU seconds, wrong answers) as calls, errors and ms of CPU per call."""
    per_call = [cpu * 1000 / calls for cpu, _ in rounds]
    return {
        "calls": calls * len(rounds),
        "errors": sum(errors for _, errors in rounds),
        "server_cpu_ms_per_call": round(sum(per_call) / len(per_call), 3),
        "rounds_ms_per_call": [round(value, 3) for value in per_call],
    }


def table(results: list[dict[str, Any]]) -> str:
    http = results[0]["server_cpu_ms_per_call"]
    lines = [
        "| door | calls | errors | server CPU ms / call (rounds) | vs HTTP |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        rounds = ", ".join(f"{value:.2f}" for value in result["rounds_ms_per_call"])
        cost = result["server_cpu_ms_per_call"]
        lines.append(
            f"| {result['door']} | {result['calls']} | {result['errors']} "
            f"| {cost:.2f} ({rounds}) | {cost / http:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = round_options(__doc__, "calls per door", calls=1_000, warmup=50)
    parser.add_argument("--delay-ms", type=int, default=0, help="the mock's answer delay")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="mcp-cost-"))
    mock = server = None
    rounds: dict[str, list[tuple[float, int]]] = {door: [] for door in DOORS}
    try:
        mock, mock_url = start_mock(work, args.delay_ms)
        server, url = start_server(work, service_env(work, mock_url, LOG_LEVEL="WARNING"))
        process = psutil.Process(server.pid)
        print(f"mcp_cost: {args.rounds} rounds of {args.calls} {args.program} calls per door", flush=True)
        for number in range(1, args.rounds + 1):
            for door in DOORS:
                cpu, errors = asyncio.run(measure(door, url, process, args))
                rounds[door].append((cpu, errors))
                print(
                    f"round {number} {door}: {cpu * 1000 / args.calls:.2f} ms per call, {errors} errors",
                    flush=True,
                )
    finally:
        for started in (server, mock):
            if started is not None:
                stop(started)
        shutil.rmtree(work, ignore_errors=True)
    results = [{"door": door, **summary(rounds[door], args.calls)} for door in DOORS]
    print(table(results))
    if args.json:
        point = {"program": args.program, "concurrency": args.concurrency, "delay_ms": args.delay_ms}
        args.json.write_text(json.dumps({**point, "results": results}, indent=2) + "\n")
    return 1 if any(result["errors"] for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
