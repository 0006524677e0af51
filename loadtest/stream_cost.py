"""Server CPU of one long answer, streamed (``POST /{Program}/stream``) and not (``POST /{Program}``).

Starts the mock LLM and one uvicorn process serving ``loadtest/fixture_project`` (the helpers of
``loadtest/servers.py``). The mock echoes the question (``Echo: <question>``) and streams its answer
in chunks of 20 characters, so a question of N KB is an answer of N KB in N * 50 chunks. For each
size the script sends one call per door, ``--rounds`` times (doors and sizes in turns), checks
that the whole answer came back (the streamed chunks joined, or the JSON body), and reads the
server's CPU time (user + system, psutil) right before and right after the call. The client runs
in this process: its CPU is not counted. It also reports the server's RSS after the run.

    python -m loadtest.stream_cost                        # 100 KB and 900 KB, 3 rounds
    python -m loadtest.stream_cost --kb 10 100 300 900 --rounds 1 --json cost.json
    python -m loadtest.stream_cost --adapter json          # the program on DSPy's JSONAdapter

Processes are started here and stopped by their PID; nothing else is touched.
"""

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from loadtest.mcp_cost import cpu_seconds
from loadtest.servers import service_env, start_mock, start_server, stop

DOORS = ("stream", "plain")


def question(kb: int, round_no: int) -> str:
    head = f"round {round_no} size {kb} KB: "
    return head + "x" * (kb * 1000 - len(head))


def streamed_answer(client: httpx.Client, url: str, program: str, text: str) -> str:
    """The answer put together from the stream's chunk events (the final event must say the same)."""
    chunks: list[str] = []
    final: dict[str, Any] | None = None
    with client.stream("POST", f"{url}/{program}/stream", json={"question": text}) as response:
        response.raise_for_status()
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and line != "data: [DONE]":
                data = json.loads(line[6:])
                if event == "chunk":
                    chunks.append(data["chunk"])
                elif event == "final":
                    final = data["outputs"]
                else:
                    raise RuntimeError(f"stream failed: {data}")
    joined = "".join(chunks)
    if final is None or joined.strip('"') != final["answer"]:  # JSONAdapter: DSPy keeps the quotes
        raise RuntimeError("the streamed chunks do not add up to the final answer")
    return final["answer"]


def plain_answer(client: httpx.Client, url: str, program: str, text: str) -> str:
    response = client.post(f"{url}/{program}", json={"question": text})
    response.raise_for_status()
    return response.json()["answer"]


def measure(args: argparse.Namespace, url: str, server: psutil.Process) -> dict[str, dict[int, list[float]]]:
    cpu: dict[str, dict[int, list[float]]] = {door: {kb: [] for kb in args.kb} for door in DOORS}
    with httpx.Client(timeout=600) as client:
        for round_no in range(-1, args.rounds):  # round -1: warm-up, not counted
            for kb in args.kb:
                for door in DOORS:
                    text = question(kb, round_no)
                    call = streamed_answer if door == "stream" else plain_answer
                    before = cpu_seconds(server)
                    answer = call(client, url, args.program, text)
                    spent = cpu_seconds(server) - before
                    if answer != f"Echo: {text}":
                        raise RuntimeError(f"{door} {kb} KB: not the echo of its question")
                    if round_no >= 0:
                        cpu[door][kb].append(spent)
    return cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kb", type=int, nargs="+", default=[100, 900], help="answer sizes in KB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--program", default="SimplePredict")
    parser.add_argument("--adapter", choices=["chat", "json"], default="chat", help="the program's adapter")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="stream-cost-"))
    mock = server_process = None
    try:
        mock, mock_url = start_mock(work, 0)
        env = service_env(work, mock_url, MAX_BODY_BYTES=str(8 * 1024 * 1024))
        config_path = Path(env["DSPY_CONFIG"])
        config = yaml.safe_load(config_path.read_text())
        config.setdefault("programs", {})[args.program] = {"adapter": args.adapter}
        config_path.write_text(yaml.safe_dump(config))
        server_process, url = start_server(work, env)
        server = psutil.Process(server_process.pid)
        rss_start = server.memory_info().rss
        cpu = measure(args, url, server)
        rss_end = server.memory_info().rss
    finally:
        for process in (server_process, mock):
            if process is not None:
                stop(process)
    results = {
        door: {str(kb): {"median_cpu_s": round(statistics.median(v), 3), "runs": [round(x, 3) for x in v]}
               for kb, v in sizes.items()}
        for door, sizes in cpu.items()
    }  # fmt: skip
    results["rss_mib"] = {"start": round(rss_start / 2**20), "end": round(rss_end / 2**20)}
    print(f"{'KB':>6} {'stream CPU s':>13} {'plain CPU s':>12}")
    for kb in args.kb:
        stream, plain = results["stream"][str(kb)], results["plain"][str(kb)]
        print(f"{kb:>6} {stream['median_cpu_s']:>13.3f} {plain['median_cpu_s']:>12.3f}")
    rss = results["rss_mib"]
    print(f"server RSS: {rss['start']} MiB at start, {rss['end']} MiB at the end")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
