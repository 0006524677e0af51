"""Server CPU per program call: MCP tool calls next to the plain HTTP route, on one server process.

Starts the mock LLM and one uvicorn process serving ``loadtest/fixture_project`` (the helpers of
``loadtest/soak.py``), then for each door in turn sends ``--calls`` calls of ``--program``,
``--concurrency`` at a time, each with its own question whose echo must come back, and reads the
server's CPU time (user + system, psutil) right before and right after them. The doors:

* ``http``: ``POST /{program}`` (aiohttp, keep-alive);
* ``mcp-2026-07-28``: ``tools/call`` from the SDK's client pinned to the 2026-07-28 revision;
* ``mcp-legacy``: the same after the initialize handshake (the SDK's newest handshake revision).

The MCP calls of a door share one client session, as an agent's would. ``--warmup`` calls per door
run first and are not measured. The client runs in this process, so its CPU is not counted.

    python -m loadtest.mcp_cost                       # 2,000 calls per door, 20 at a time
    python -m loadtest.mcp_cost --calls 500 --program SimplePredict --json cost.json

Processes are started here and stopped by their PID; nothing else is touched.
"""

import argparse
import asyncio
import itertools
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from mcp import Client

from loadtest.soak import start_mock, start_server, stop

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


async def measure(door: str, url: str, program: str, server: psutil.Process, args: argparse.Namespace) -> dict:
    counter = itertools.count()

    def questions(count: int) -> list[str]:
        return [f"{door} question {next(counter)}: what is the answer?" for _ in range(count)]

    async def run(call: Call) -> dict[str, Any]:
        await drive(call, questions(args.warmup), args.concurrency)
        cpu, started = cpu_seconds(server), time.perf_counter()
        errors = await drive(call, questions(args.calls), args.concurrency)
        elapsed, cpu = time.perf_counter() - started, cpu_seconds(server) - cpu
        return {
            "door": door,
            "calls": args.calls,
            "errors": errors,
            "calls_per_s": round(args.calls / elapsed, 1),
            "server_cpu_ms_per_call": round(cpu * 1000 / args.calls, 3),
        }

    if door == "http":
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(url, connector=connector) as session:

            async def post(question: str) -> str:
                async with session.post(f"/{program}", json={"question": question}) as response:
                    return str((await response.json()).get("answer"))

            return await run(post)
    era = door.removeprefix("mcp-")
    async with Client(f"{url}/mcp", mode=era) as client:

        async def call_tool(question: str) -> str:
            result = await client.call_tool(program, {"question": question})
            return "" if result.is_error else str(result.structured_content["answer"])

        return await run(call_tool)


def table(results: list[dict[str, Any]]) -> str:
    http = next(result for result in results if result["door"] == "http")["server_cpu_ms_per_call"]
    lines = ["| door | calls | errors | calls/s | server CPU ms / call | vs HTTP |", "|---|---|---|---|---|---|"]
    for result in results:
        ratio = result["server_cpu_ms_per_call"] / http if http else float("nan")
        lines.append(
            f"| {result['door']} | {result['calls']} | {result['errors']} | {result['calls_per_s']} "
            f"| {result['server_cpu_ms_per_call']} | {ratio:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2_000, help="measured calls per door")
    parser.add_argument("--warmup", type=int, default=100, help="calls per door before measuring")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--program", default="AsyncPredict", help="AsyncPredict, SimplePredict or MultiStep")
    parser.add_argument("--delay-ms", type=int, default=0, help="the mock's answer delay")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="mcp-cost-"))
    mock = server = None
    results = []
    try:
        mock, mock_url = start_mock(work, args.delay_ms)
        server, url = start_server(work, mock_url)
        process = psutil.Process(server.pid)
        print(f"mcp_cost: {args.calls} {args.program} calls per door, {args.concurrency} at a time, to {url}")
        for door in DOORS:
            results.append(asyncio.run(measure(door, url, args.program, process, args)))
            print(json.dumps(results[-1]), flush=True)
    finally:
        for started in (server, mock):
            if started is not None:
                stop(started)
        shutil.rmtree(work, ignore_errors=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({"program": args.program, "concurrency": args.concurrency,
                                         "delay_ms": args.delay_ms, "results": results}, indent=2) + "\n")  # fmt: skip
    return 1 if any(result["errors"] for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
