"""Soak test: many requests against one server process; its memory must stay flat.

Starts the mock LLM and this service (one uvicorn process serving ``loadtest/fixture_project``
with a throw-away SQLite database, so telemetry rows are written as in production), sends
``--requests`` requests at a fixed ``--concurrency``, each with its own ~2 KB question (a server
that kept prompts, as DSPy's history and trace lists do when left on, would grow by megabytes),
and samples the server's RSS every ``--sample-every`` requests. Every answer must be a 200 that
echoes its own question.

The growth is the largest sample after the warm-up minus the sample at the end of the warm-up
(``--warmup`` requests): it must stay under ``--max-growth-mib``, or the script exits 1.

    python -m loadtest.soak                           # 50,000 requests, ~5 minutes on 2 cores
    python -m loadtest.soak --requests 2000 --sample-every 500 --warmup 500
    python -m loadtest.soak --json results.json       # the samples, for docs/PERFORMANCE.md

Processes are started here and stopped by their PID; nothing else is touched.
"""

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import psutil

from loadtest.servers import StartError, service_env, start_mock, start_server, stop

MIB = 1024 * 1024


@dataclass
class Sample:
    requests: int
    rss_mib: float
    elapsed_s: float


@dataclass
class Result:
    requests: int
    concurrency: int
    programs: list[str]
    prompt_bytes: int
    warmup: int
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""

    @property
    def baseline(self) -> Sample:
        return next(sample for sample in self.samples if sample.requests >= self.warmup)

    @property
    def growth_mib(self) -> float:
        after = [sample.rss_mib for sample in self.samples if sample.requests >= self.warmup]
        return max(after) - self.baseline.rss_mib


async def drive(url: str, server: psutil.Process, result: Result, sample_every: int) -> None:
    """``concurrency`` clients, each sending its next request when the last one is answered."""
    padding = "x" * max(0, result.prompt_bytes - 40)
    started = time.monotonic()
    sent = done = 0

    def sample() -> None:
        rss = server.memory_info().rss / MIB
        result.samples.append(Sample(done, round(rss, 1), round(time.monotonic() - started, 1)))
        print(f"{done:>8,} requests  {rss:8.1f} MiB  {time.monotonic() - started:7.1f} s", flush=True)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal sent, done
        while sent < result.requests:
            index = sent
            sent += 1
            program = result.programs[index % len(result.programs)]
            question = f"soak {index} {padding}"
            try:
                async with session.post(f"/{program}", json={"question": question}) as response:
                    body = await response.json(content_type=None)
                    ok = response.status == 200 and question in str(body.get("answer", ""))
                    if not ok:
                        raise ValueError(f"{response.status}: {str(body)[:200]}")
            except (aiohttp.ClientError, ValueError, TimeoutError) as exc:
                result.errors += 1
                result.first_error = result.first_error or f"{program} #{index}: {exc}"
            done += 1
            if done % sample_every == 0:
                sample()

    sample()  # before the first request (after start-up)
    connector = aiohttp.TCPConnector(limit=result.concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(result.concurrency)))


def report(result: Result, max_growth_mib: float) -> bool:
    print()
    print(f"{'requests':>10}  {'RSS MiB':>8}  {'vs warm-up':>10}")
    baseline = result.baseline.rss_mib
    for sample in result.samples:
        delta = f"{sample.rss_mib - baseline:+.1f}" if sample.requests >= result.warmup else ""
        print(f"{sample.requests:>10,}  {sample.rss_mib:>8.1f}  {delta:>10}")
    growth = result.growth_mib
    ok = growth < max_growth_mib and result.errors == 0
    print(
        f"\nGrowth after warm-up ({result.warmup:,} requests): {growth:+.1f} MiB "
        f"(limit {max_growth_mib:g} MiB); errors: {result.errors}"
    )
    if result.first_error:
        print(f"first error: {result.first_error}")
    print("PASS" if ok else "FAIL")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sample-every", type=int, default=5_000)
    parser.add_argument("--warmup", type=int, default=5_000, help="requests before the baseline sample")
    parser.add_argument("--max-growth-mib", type=float, default=30.0)
    parser.add_argument("--programs", default="AsyncPredict,SimplePredict", help="comma-separated, in turn")
    parser.add_argument("--prompt-bytes", type=int, default=2_000, help="size of each question")
    parser.add_argument("--delay-ms", type=int, default=0, help="the mock's answer delay")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, database)")
    args = parser.parse_args(argv)
    if args.warmup % args.sample_every or args.warmup >= args.requests:
        parser.error("--warmup must be a multiple of --sample-every and smaller than --requests")

    result = Result(args.requests, args.concurrency, args.programs.split(","), args.prompt_bytes, args.warmup)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    mock = server = None
    try:
        mock, mock_url = start_mock(work, args.delay_ms)
        server, url = start_server(work, service_env(work, mock_url, LOG_LEVEL="WARNING"))
        print(f"soak: {args.requests:,} requests, {args.concurrency} at a time, to {url} (PID {server.pid})")
        asyncio.run(drive(url, psutil.Process(server.pid), result, args.sample_every))
    except StartError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 1
    finally:
        for process in (server, mock):
            if process is not None:
                stop(process)
        if args.keep:
            print(f"soak: work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    ok = report(result, args.max_growth_mib)
    if args.json:
        summary = {**asdict(result), "growth_mib": round(result.growth_mib, 1), "passed": ok}
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
