"""Soak test: many requests against one server process; its memory must stay flat.

Starts the mock LLM and this service (one uvicorn process serving ``loadtest/fixture_project``
with a throw-away SQLite database, so telemetry rows are written as in production), sends
``--requests`` requests at a fixed ``--concurrency``, each with its own ~2 KB question (a server
that kept prompts, as DSPy's history and trace lists do when left on, would grow by megabytes),
and samples the server's RSS every ``--sample-every`` requests. Every answer must be a 200 that
echoes its own question.

The growth is the largest sample after the warm-up minus the sample at the end of the warm-up
(``--warmup`` requests): it must stay under ``--max-growth-mib``, or the script exits 1.

    python loadtest/soak.py                           # 50,000 requests, ~5 minutes on 2 cores
    python loadtest/soak.py --requests 2000 --sample-every 500 --warmup 500
    python loadtest/soak.py --json results.json       # the samples, for docs/PERFORMANCE.md

Processes are started here and stopped by their PID; nothing else is touched.
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import psutil
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIXTURE = HERE / "fixture_project"
MIB = 1024 * 1024
READY_TIMEOUT_S = 90.0


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(
                f"soak: {url} exited with {process.returncode} before it was ready:\n{log.read_text()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own loopback server
                if response.status < 500:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"soak: {url} not ready within {READY_TIMEOUT_S:g} s:\n{log.read_text()[-3000:]}")


def start_mock(work: Path, delay_ms: int) -> tuple[subprocess.Popen, str]:
    log = work / "mock.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, str(HERE / "mock_llm.py"), "--host", "127.0.0.1", "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MOCK_DELAY_MS": str(delay_ms)},
        )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        match = re.search(r"mock LLM listening on (http://\S+)/v1", log.read_text())
        if match:
            return process, match.group(1)
        if process.poll() is not None:
            raise SystemExit(f"soak: the mock LLM exited:\n{log.read_text()}")
        time.sleep(0.05)
    stop(process)
    raise SystemExit("soak: the mock LLM did not start")


def start_server(work: Path, mock_url: str) -> tuple[subprocess.Popen, str]:
    config = yaml.safe_load((FIXTURE / "dspy.config.yaml").read_text())
    for entry in config["models"]["registry"].values():
        entry["api_base"] = f"{mock_url}/v1"
    config_path = work / "dspy.config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "dspysite.settings",
        "DSPY_PROJECT_DIR": str(FIXTURE),
        "DSPY_CONFIG": str(config_path),
        "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}",
        "LOG_LEVEL": "WARNING",
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )
    port = free_port()
    log = work / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "dspysite.asgi:application", "--host", "127.0.0.1",
             "--port", str(port), "--no-access-log"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/health/ready", process, log)
    return process, url


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
        server, url = start_server(work, mock_url)
        print(f"soak: {args.requests:,} requests, {args.concurrency} at a time, to {url} (PID {server.pid})")
        asyncio.run(drive(url, psutil.Process(server.pid), result, args.sample_every))
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
