"""Versions built into instances: once per process however many calls wait, off the event loop (a
thread), at most ``server.max_loaded_versions`` per program, least recently used out; a call that
holds a dropped version still runs on it."""

import asyncio
import threading

import pytest

from programs.runtime import get_runtime
from versions import registry
from versions.live import VersionRef
from versions.loaded import LoadedVersions
from versions.states import loaded_state

pytestmark = pytest.mark.django_db(transaction=True)
P = "QA"


def versions(count: int) -> list[tuple[str, VersionRef]]:
    program = get_runtime().programs[P]
    made = []
    for index in range(count):
        state = loaded_state(program)
        name = next(iter(state))
        state[name]["demos"] = [{"question": f"q{index}", "answer": f"a{index}"}]
        version, _ = registry.register(program, state)
        made.append((version.label, VersionRef(version.pk, version.state_sha256)))
    return made


def test_built_once_on_a_thread_and_the_least_recently_used_dropped() -> None:
    program = get_runtime().programs[P]
    loaded = LoadedVersions(program, "the start-up state", limit=2)
    builds: list[str] = []
    original = program.instances_for

    def counting(state: dict) -> object:
        builds.append(threading.current_thread().name)
        return original(state)

    object.__setattr__(program, "instances_for", counting)
    try:
        (a, ref_a), (b, ref_b), (c, ref_c) = versions(3)

        async def leases(label: str, ref: VersionRef, calls: int) -> list[object]:
            async def one() -> object:
                async with loaded.source(label, ref).lease() as lease:
                    return lease.instance

            return await asyncio.gather(*(one() for _ in range(calls)))

        first = asyncio.run(leases(a, ref_a, 5))
        assert len(builds) == 1 and builds[0].startswith("version-")  # once, on its own thread
        assert all(instance is first[0] for instance in first)  # shared instance_mode
        asyncio.run(leases(b, ref_b, 1))
        asyncio.run(leases(a, ref_a, 1))  # a is now the most recently used
        asyncio.run(leases(c, ref_c, 1))
        assert loaded.loaded() == [a, c]  # b dropped, not a
        assert len(builds) == 3
    finally:
        object.__delattr__(program, "instances_for")
