"""The lease (``Program.lease()``): the one place a call gets its instance, given back exactly once.

In-process, against the mock LLM: a runtime built from a config, streams relayed by
``programs.streaming.StreamedCall`` (the view's relay, without the HTTP layer). A counting
``release`` on the program's pool records who gave its one copy back, from which thread, and
signals the test, which waits on that signal (never on a sleep).
"""

import asyncio
import importlib.util
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import dspy
import pytest

from programs import runtime as runtime_module
from programs.config import load_config
from programs.discovery import Discovery, ProgramSpec
from programs.execution import CallFailed, run_program
from programs.instances import InstancePool, SharedInstance
from programs.program import Program, VersionAsk, install_resolver
from programs.runtime import Runtime, build_runtime
from programs.streaming import StreamedCall
from programs.usage import RequestUsage
from tests.programs.conftest import SERVICE_PROJECT
from tests.support import Running

STORIES = SERVICE_PROJECT / "src/service_programs/modules/stories.py"


def _stories() -> ModuleType:
    """The fixture project's streaming programs (tests/devx_fixtures.py serves them), from their file."""
    spec = importlib.util.spec_from_file_location("lease_test_stories", STORIES)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stories = _stories()
PooledStory, PooledStorySync = stories.PooledStory, stories.PooledStorySync


class ShortStorySync(PooledStorySync):  # type: ignore[misc, valid-type]
    """PooledStorySync with a 1 s timeout."""


class Returns:
    """Who gave a pool's instances back: the thread of each ``release``; ``wait`` for the n-th."""

    def __init__(self, pool: InstancePool, loop: asyncio.AbstractEventLoop) -> None:
        self.threads: list[str] = []
        self._loop = loop
        self._changed = asyncio.Event()
        release = pool.release

        def counted(instance: dspy.Module) -> None:
            self.threads.append(threading.current_thread().name)
            release(instance)
            loop.call_soon_threadsafe(self._changed.set)

        pool.release = counted  # type: ignore[method-assign]

    async def wait(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.threads) < count:
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def runtime(tmp_path: Path, llm: Running, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """Every program on a pool of one copy; ShortStorySync's calls time out after 1 s."""
    config = tmp_path / "dspy.config.yaml"
    mock = {"model": "openai/mock-model", "api_base": f"{llm.url}/v1", "api_key": "k", "num_retries": 0}
    pooled = {"instance_mode": "pool", "pool_size": 1}
    settings = {
        "models": {"registry": {"mock": mock}},
        "server": {"sync_worker_threads": 4},
        "programs": {
            "PooledStory": pooled,
            "PooledStorySync": pooled,
            "ShortStorySync": {**pooled, "request_timeout_s": 1},
        },
    }
    config.write_text(json.dumps(settings))  # JSON is YAML
    specs = [
        ProgramSpec("PooledStory", PooledStory, Path(__file__), is_async=True),
        ProgramSpec("PooledStorySync", PooledStorySync, Path(__file__), is_async=False),
        ProgramSpec("ShortStorySync", ShortStorySync, Path(__file__), is_async=False),
    ]
    built = build_runtime(load_config(config), Discovery(specs=specs))
    monkeypatch.setattr(runtime_module, "_runtime", built)  # what get_runtime() answers
    try:
        yield built
    finally:
        built.executor.shutdown()


def stream(program: Program, topic: str) -> AsyncIterator[bytes]:
    return StreamedCall(program, {"topic": topic}, "lease-test", b"{}").events()


def parsed(event: bytes) -> tuple[str, Any]:
    name, data = event.decode().split("\n")[:2]
    return name.removeprefix("event: "), json.loads(data.removeprefix("data: "))


async def finished(events: AsyncIterator[bytes]) -> list[tuple[str, Any]]:
    return [parsed(event) for event in [e async for e in events] if event.startswith(b"event: ")]


@pytest.mark.parametrize("name", ["PooledStory", "PooledStorySync"])
def test_a_stream_cut_off_midway_gives_its_copy_back_once(runtime: Runtime, name: str) -> None:
    program = runtime.programs[name]

    async def scenario() -> None:
        returns = Returns(program.instances, asyncio.get_running_loop())  # type: ignore[arg-type]
        first_chunk = asyncio.Event()

        async def client() -> None:  # reads the first chunk, then waits until it is cut off
            async for event in stream(program, "cut off [delay=4000]"):
                if event.startswith(b"event: chunk"):
                    first_chunk.set()

        reading = asyncio.create_task(client())
        async with asyncio.timeout(10):
            await first_chunk.wait()
        reading.cancel()  # the client goes away: its request task is cancelled
        await returns.wait(1)
        assert len(returns.threads) == 1
        # The copy is free again: the next stream runs on it (a pool of one: else a 429 event).
        events = await finished(stream(program, "after"))
        assert [event for event, _ in events][-1] == "final", events
        assert len(returns.threads) == 2

    asyncio.run(scenario())


def test_a_streamed_sync_call_that_times_out_gives_its_copy_back_from_its_thread(runtime: Runtime) -> None:
    program = runtime.programs["ShortStorySync"]

    async def scenario() -> None:
        returns = Returns(program.instances, asyncio.get_running_loop())  # type: ignore[arg-type]
        events = await finished(stream(program, "too long [delay=3000]"))
        assert events[-1][0] == "error" and events[-1][1]["status"] == 504, events
        await returns.wait(1)
        # Given back by the worker thread when it finished, not by the call when it timed out.
        assert returns.threads == ["AnyIO worker thread"]
        assert [event for event, _ in await finished(stream(program, "after"))][-1] == "final"
        assert len(returns.threads) == 2

    asyncio.run(scenario())


def test_a_sync_call_that_times_out_gives_its_copy_and_thread_slot_back_from_its_thread(
    runtime: Runtime,
) -> None:
    program = runtime.programs["ShortStorySync"]

    async def scenario() -> None:
        returns = Returns(program.instances, asyncio.get_running_loop())  # type: ignore[arg-type]
        with pytest.raises(CallFailed) as failed:
            await run_program(runtime, program, {"topic": "too long [delay=3000]"}, RequestUsage())
        assert failed.value.status == 504
        assert runtime.pool_limiter._slots._value == 3  # the thread still holds its slot
        await returns.wait(1)
        assert returns.threads[0].startswith("dspy-sync")
        body = await run_program(runtime, program, {"topic": "after"}, RequestUsage())
        assert json.loads(body)["title"] == "Echo: after"
        assert len(returns.threads) == 2

    asyncio.run(scenario())


def test_a_streamed_sync_program_streams_its_chunks(runtime: Runtime) -> None:
    program = runtime.programs["PooledStorySync"]
    events = asyncio.run(finished(stream(program, "chunks [delay=300]")))
    names = [name for name, _ in events]
    assert names[-1] == "final" and names.count("chunk") > 1, events
    title = "".join(data["chunk"] for name, data in events if name == "chunk" and data["field"] == "title")
    assert title == "Echo: chunks [delay=300]"


def test_the_installed_resolver_decides_the_instance_every_call_runs_on(runtime: Runtime) -> None:
    program = runtime.programs["PooledStory"]
    other = PooledStory()
    seen: list[Program] = []

    class Resolver:
        def __call__(self, asked: Program, ask: VersionAsk) -> SharedInstance:
            seen.append(asked)
            ask.version = "v2"
            return SharedInstance(other)

        def describe(self, program: Program) -> dict[str, Any]:
            return {}

    resolver = Resolver()

    async def instance_of_a_call() -> dspy.Module:
        async with program.lease() as lease:
            return lease.instance

    install_resolver(resolver)
    try:
        assert asyncio.run(instance_of_a_call()) is other
        events = asyncio.run(finished(stream(program, "resolved")))  # listeners on that instance too
        assert events[-1][0] == "final" and any(name == "chunk" for name, _ in events)
    finally:
        install_resolver(None)
    assert seen == [program, program]
    assert asyncio.run(instance_of_a_call()) is not other
