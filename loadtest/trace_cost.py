"""Server CPU per request with OpenTelemetry tracing off and on (docs/TELEMETRY.md, "Traces").

Starts the mock LLM, an OTLP/HTTP receiver in this process that reads and drops every export
(``loadtest/otlp_receiver.py``), and one uvicorn process per mode serving
``loadtest/fixture_project``, each with its own database:

* ``off``: no ``OTEL_*`` variable (the default);
* ``on``: ``OTEL_EXPORTER_OTLP_ENDPOINT`` at the receiver, every trace sampled and exported with
  the SDK's default batching (a server, a program and an LM span per request);
* ``unsampled``: the same with ``OTEL_TRACES_SAMPLER=always_off`` (the spans' bookkeeping, no export).

The modes take turns, ``--rounds`` times; in each turn ``--calls`` requests of ``--program`` go
``--concurrency`` at a time (aiohttp, keep-alive), each with its own question whose echo must come
back, after ``--warmup`` unmeasured ones. The server's CPU (user + system, psutil, its exporter
thread included) is read right before and after. The client and the receiver run in this process:
their CPU is not counted.

    python -m loadtest.trace_cost                                  # AsyncPredict, 3 x 2,000 calls
    python -m loadtest.trace_cost --program SimplePredict --calls 1000 --json cost.json

Processes are started here and stopped by their PID; nothing else is touched.
"""

import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil

from loadtest.mcp_cost import http_round, round_options
from loadtest.otlp_receiver import OtlpReceiver
from loadtest.servers import service_env, start_mock, start_server, stop


def mode_env(mode: str, receiver: OtlpReceiver) -> dict[str, str]:
    if mode == "off":
        return {}
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SERVICE_NAME": "trace-cost"}
    if mode == "unsampled":
        env["OTEL_TRACES_SAMPLER"] = "always_off"
    return env


MODES = ("off", "on", "unsampled")


def table(results: dict[str, list[tuple[float, int]]], calls: int) -> str:
    means = {
        mode: sum(cpu for cpu, _ in rounds) * 1000 / calls / len(rounds) for mode, rounds in results.items()
    }
    lines = [
        "| tracing | requests | errors | server CPU ms / request (rounds) | vs off |",
        "|---|---|---|---|---|",
    ]
    for mode, rounds in results.items():
        shown = ", ".join(f"{cpu * 1000 / calls:.3f}" for cpu, _ in rounds)
        errors = sum(errors for _, errors in rounds)
        extra = means[mode] - means["off"]
        lines.append(
            f"| {mode} | {calls * len(rounds)} | {errors} | {means[mode]:.3f} ({shown}) | {extra:+.3f} ms |"
        )
    return "\n".join(lines)


def start_servers(work: Path, mock_url: str, receiver: OtlpReceiver, started: list[Any]) -> dict[str, Any]:
    """One server per mode, each with its own database; mode -> (its psutil process, its URL)."""
    servers = {}
    for mode in MODES:
        (work / mode).mkdir()
        env = service_env(work / mode, mock_url, LOG_LEVEL="WARNING")
        env = {key: value for key, value in env.items() if not key.startswith("OTEL_")}
        env.update(mode_env(mode, receiver))  # only this mode's OTEL_* variables, none inherited
        process, url = start_server(work / mode, env)
        started.append(process)
        servers[mode] = (psutil.Process(process.pid), url)
    return servers


def main(argv: list[str] | None = None) -> int:
    parser = round_options(__doc__, "requests per mode", calls=2_000, warmup=100)
    parser.add_argument("--delay-ms", type=int, default=0, help="the mock's answer delay")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="trace-cost-"))
    started: list[Any] = []
    results: dict[str, list[tuple[float, int]]] = {mode: [] for mode in MODES}
    try:
        with OtlpReceiver(decode=False) as receiver:
            mock, mock_url = start_mock(work, args.delay_ms)
            started.append(mock)
            servers = start_servers(work, mock_url, receiver, started)
            print(f"trace_cost: {args.rounds} rounds of {args.calls} {args.program} requests per mode")
            for number in range(1, args.rounds + 1):
                for mode, (process, url) in servers.items():
                    cpu, errors = asyncio.run(http_round(mode, url, process, args))
                    results[mode].append((cpu, errors))
                    print(f"round {number} {mode}: {cpu * 1000 / args.calls:.3f} ms/request, {errors} errors")
            for process in reversed(started):  # the "on" server flushes its last spans as it stops
                stop(process)
            exports = receiver.requests
    finally:
        for process in started:
            stop(process)
        shutil.rmtree(work, ignore_errors=True)
    print(table(results, args.calls), f"\nOTLP export requests received: {exports}", sep="")
    if args.json:
        point = {"program": args.program, "concurrency": args.concurrency, "delay_ms": args.delay_ms}
        args.json.write_text(json.dumps({**point, "results": results, "exports": exports}, indent=2) + "\n")
    failed = any(errors for rounds in results.values() for _, errors in rounds)
    return 1 if failed or exports == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
