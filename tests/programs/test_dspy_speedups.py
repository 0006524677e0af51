"""The DSPy speedups: inline only what is allowed, cached answers equal DSPy's own.

They patch DSPy 3.4's native engine; DSPy 3.3 has none of it (tests/programs/test_dspy_patches.py
shows every one of them off there, with DSPy's own code running).
"""

import asyncio
import os
import resource
import socket
import threading
from collections.abc import Callable

import pytest

from programs.dspy_calls import native_engine

if not native_engine():
    pytest.skip("DSPy without the native engine (3.3): the speedups do not apply", allow_module_level=True)

import dspy
from dspy._vendor.lm15.transports import _async as lm15_async_transport
from dspy._vendor.lm15.transports import _proxy as lm15_proxy
from dspy._vendor.lm15.transports import _sync as lm15_sync_transport
from dspy.adapters import utils as adapter_utils
from dspy.clients import backend_selection, capabilities, costs, execution, model_metadata
from dspy.lm15 import AccessPolicy, OpenAIChatCompat, ProviderDefinition, register_provider

from programs import dspy_patches, dspy_speedups
from programs.lms import configure_dspy, engine_name
from tests.support import Running


def setup_module() -> None:
    configure_dspy(max_connections=1024)


def test_installed_on_the_measured_version() -> None:
    assert dspy.__version__ in dspy_patches.MEASURED_VERSIONS
    assert all(dspy_patches.active(name) for name, _, _ in dspy_speedups.PATCHES)
    assert asyncio.to_thread is dspy_speedups._to_thread
    assert execution.select_backend is dspy_speedups._select_backend
    assert capabilities.select_backend is dspy_speedups._select_backend
    assert capabilities.resolve is dspy_speedups._resolve
    assert capabilities._capabilities is dspy_speedups._capabilities
    assert capabilities.model_info is dspy_speedups._model_info
    assert costs.model_info is dspy_speedups._model_info
    assert lm15_async_transport.wait_for is dspy_speedups._wait_for
    assert lm15_sync_transport._ConnectionPool.checkout is dspy_speedups._checkout
    assert lm15_sync_transport._SyncConnection.is_stale is dspy_speedups._sync_connection_is_stale
    assert lm15_async_transport._AsyncConnection.is_stale is dspy_speedups._async_connection_is_stale


def prepare() -> str:
    """Named like DSPy's step, but defined outside DSPy: must never be inlined."""
    return threading.current_thread().name


async def thread_of(func: object, inline: bool) -> str:
    token = dspy_speedups.inline_lm_steps.set(inline)
    try:
        return await asyncio.to_thread(func)  # type: ignore[arg-type]
    finally:
        dspy_speedups.inline_lm_steps.reset(token)


def test_only_dspy_steps_run_inline_and_only_when_asked() -> None:
    async def scenario() -> tuple[str, str, str, str]:
        loop_thread = threading.current_thread().name
        dspy_step = execution.prepare
        original_name = dspy_step.__qualname__
        assert original_name in dspy_speedups.INLINE_STEPS

        def fake_step() -> str:
            return threading.current_thread().name

        fake_step.__module__ = "dspy.clients.execution"
        fake_step.__qualname__ = "prepare"
        return (
            loop_thread,
            await thread_of(fake_step, inline=True),
            await thread_of(fake_step, inline=False),
            await thread_of(prepare, inline=True),
        )

    loop_thread, inlined, not_asked, not_dspy = asyncio.run(scenario())
    assert inlined == loop_thread
    assert not_asked != loop_thread
    assert not_dspy != loop_thread


def test_cached_backend_selection_matches_dspy() -> None:
    lm = dspy.LM("openai/some-model", api_base="http://127.0.0.1:9/v1", api_key="k", cache=False)
    fresh = dspy_speedups._original_select_backend(lm, {"temperature": 0.5})
    first = execution.select_backend(lm, {"temperature": 0.5})
    second = execution.select_backend(lm, {"temperature": 0.9})  # not a client key: same answer
    assert first == fresh
    assert second == fresh
    first.clients["api_key"] = "changed by a caller"
    assert execution.select_backend(lm, None).clients["api_key"] == "k"


def test_cache_tells_client_settings_apart() -> None:
    lm = dspy.LM("openai/some-model", api_base="http://127.0.0.1:9/v1", api_key="k", cache=False)
    plain = execution.select_backend(lm, {})
    with_headers = execution.select_backend(lm, {"extra_headers": {"x": "1"}})
    assert plain.native is True
    assert with_headers.native is False  # DSPy sends extra headers through LiteLLM
    assert with_headers == backend_selection.select_backend(lm, {"extra_headers": {"x": "1"}})


def test_resolution_cached_per_lm_configuration() -> None:
    lm = dspy.LM("openai/some-model", api_base="http://127.0.0.1:9/v1", api_key="k", cache=False)
    other = dspy.LM("openai/other-model", api_base="http://127.0.0.1:9/v1", api_key="k", cache=False)
    assert capabilities.resolve(lm) == dspy_speedups._original_resolve(lm)
    assert capabilities.resolve(lm) is capabilities.resolve(lm)
    assert capabilities.resolve(other).model == "other-model"


def test_capability_plans_cached_and_equal_to_dspys() -> None:
    lm = dspy.LM("openai/gpt-4o-mini", api_key="k", cache=False)
    plan = capabilities.capabilities(lm)
    assert plan == dspy_speedups._original_capabilities(lm)
    assert plan.response_schema  # DSPy's metadata for this model, not a default
    assert capabilities.capabilities(lm) is plan
    other = dspy.LM("openai/gpt-3.5-turbo-instruct", api_key="k", cache=False)
    assert capabilities.capabilities(other) == dspy_speedups._original_capabilities(other)


def test_proxy_settings_are_read_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    before = lm15_proxy.getproxies()
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    assert lm15_proxy.getproxies() == before


def test_type_adapters_are_reused_and_behave_the_same() -> None:
    assert adapter_utils.TypeAdapter(list[int]) is adapter_utils.TypeAdapter(list[int])
    assert adapter_utils.serialize_for_json({"a": (1, 2)}) == {"a": [1, 2]}
    assert adapter_utils.TypeAdapter(list[int]).validate_python(["1"]) == [1]


def test_lms_bound_to_declared_providers_are_cached_too() -> None:
    from programs.config import DeclaredModel, ModelEntry
    from programs.lms import declare_endpoint

    entry = ModelEntry(model="openai/declared-model", api_base="http://127.0.0.1:9/v1", api_key="k")
    model = declare_endpoint("speedup-test", entry, DeclaredModel(response_schema=False))
    lm = dspy.LM(model, api_base="http://127.0.0.1:9/v1", api_key="k", cache=False)
    assert lm._providers
    assert capabilities.resolve(lm) is capabilities.resolve(lm)
    assert capabilities.resolve(lm).declared
    assert execution.select_backend(lm, {}) == dspy_speedups._original_select_backend(lm, {})


def test_gateway_variable_still_switches_to_litellm(monkeypatch: pytest.MonkeyPatch) -> None:
    lm = dspy.LM("openai/gateway-model", api_key="k", cache=False)
    assert engine_name(lm) == "native"
    monkeypatch.setenv("OPENAI_API_BASE", "http://127.0.0.1:9/v1")
    assert engine_name(lm) == "litellm"


def test_transport_timeouts_run_in_the_callers_task() -> None:
    async def scenario() -> tuple[bool, bool]:
        async def which_task() -> asyncio.Task | None:
            return asyncio.current_task()

        caller = asyncio.current_task()
        timed = await lm15_async_transport.wait_for(which_task(), timeout=5)
        untimed = await lm15_async_transport.wait_for(which_task(), timeout=None)
        return timed is caller, untimed is caller

    assert asyncio.run(scenario()) == (True, True)


def test_transport_timeout_expires_as_timeout_error() -> None:
    async def scenario() -> None:
        await lm15_async_transport.wait_for(asyncio.sleep(10), timeout=0.01)

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(scenario())


def test_caller_cancellation_stays_a_cancellation_and_frees_the_slot() -> None:
    """The guarantee lm15's helper exists for: cancelling the caller never reads as a timeout."""

    async def scenario() -> tuple[bool, int]:
        slot = asyncio.Semaphore(1)
        await slot.acquire()
        waiter = asyncio.create_task(lm15_async_transport.wait_for(slot.acquire(), timeout=5))
        await asyncio.sleep(0)
        slot.release()  # the permit is handed over while the caller is being cancelled
        waiter.cancel()
        try:
            await waiter
        except asyncio.CancelledError:
            cancelled = True
        else:
            cancelled = False
        return cancelled, slot._value

    cancelled, free_permits = asyncio.run(scenario())
    assert cancelled
    assert free_permits == 1


class ProbedConnection(lm15_sync_transport._SyncConnection):
    """Records whether its pool's lock was held while its staleness was checked."""

    __slots__ = ("lock_held_during_check", "pool")

    def is_stale(self) -> bool:
        self.lock_held_during_check = self.pool._lock.locked()
        return super().is_stale()


def test_pool_checkout_skips_stale_connections_without_holding_the_lock() -> None:
    origin = ("http", "127.0.0.1", 9)
    pool = lm15_sync_transport._ConnectionPool(max_connections=4)
    live_sock, live_peer = socket.socketpair()
    stale_sock, stale_peer = socket.socketpair()
    stale_peer.close()  # the server closed this keep-alive connection while it was idle
    live, stale = ProbedConnection(origin, live_sock), ProbedConnection(origin, stale_sock)
    for conn in (live, stale):
        conn.pool = pool
        pool.register_new(conn)
        pool.checkin(conn)
    try:
        assert pool.checkout(origin) is live  # LIFO: the stale one is tried first and dropped
        assert stale.closed and not live.closed
        assert not stale.lock_held_during_check and not live.lock_held_during_check
        assert pool.stats() == {"idle": 0, "in_use": 1, "total_opened": 2}
        assert pool.checkout(origin) is None
    finally:
        live.close()
        live_peer.close()


def high_descriptor(sock: socket.socket, fd: int = 1500) -> socket.socket:
    """The same connection on a descriptor select() refuses (>= 1024)."""
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] <= fd:
        pytest.skip(f"this process may not open descriptor {fd} (ulimit -n)")
    os.dup2(sock.fileno(), fd)
    sock.close()
    return socket.socket(fileno=fd)


def test_connections_on_high_descriptors_are_reused_by_the_sync_pool() -> None:
    origin = ("http", "127.0.0.1", 9)
    pool = lm15_sync_transport._ConnectionPool(max_connections=4)
    ours, peer = socket.socketpair()
    conn = lm15_sync_transport._SyncConnection(origin, high_descriptor(ours))
    pool.register_new(conn)
    pool.checkin(conn)
    try:
        assert pool.checkout(origin) is conn
        peer.close()  # the server closes it while idle: now it must be dropped
        assert conn.is_stale()
    finally:
        conn.close()
        peer.close()


def test_async_connections_on_high_descriptors_are_not_stale() -> None:
    async def scenario() -> bool:
        ours, peer = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=high_descriptor(ours))
        conn = lm15_async_transport._AsyncConnection(("http", "127.0.0.1", 9), reader, writer)
        try:
            return conn.is_stale()
        finally:
            conn.close()
            peer.close()

    assert asyncio.run(scenario()) is False


# DSPy's own functions, as they are without the speedups.
UNCACHED = (
    (execution, "select_backend", backend_selection.select_backend),
    (capabilities, "select_backend", backend_selection.select_backend),
    (capabilities, "resolve", dspy_speedups._original_resolve),
    (capabilities, "_capabilities", dspy_speedups._original_capabilities),
    (capabilities, "model_info", model_metadata.model_info),
    (costs, "model_info", model_metadata.model_info),
)


def dspy_answers(lm: dspy.LM) -> dict[str, object]:
    """What DSPy decides for an LM (routing, capabilities) and what one real call costs."""
    selection = execution.select_backend(lm, {})
    messages = [{"role": "user", "content": "[[ ## question ## ]]\nhi [usage=1200,345]"}]
    result = execution.execute(lm, execution.prepare(lm, None, messages, {}))
    return {
        "selection": (selection.native, selection.resolution, selection.clients),
        "route": capabilities.resolve(lm),
        "capabilities": capabilities.capabilities(lm),
        "flags": (lm.supports_function_calling, lm.supports_reasoning, lm.supports_response_schema),
        "params": lm.supported_params,
        "cost": (result.cost, result.cost_details),
        "usage": result.usage,
    }


def answers_without_speedups(lm: dspy.LM, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    with monkeypatch.context() as patch:
        for module, name, original in UNCACHED:
            patch.setattr(module, name, original)
        return dspy_answers(lm)


def priced_endpoint() -> str:
    """A declared provider whose models DSPy's metadata prices under the ``openai`` namespace."""
    definition = ProviderDefinition.chat(
        AccessPolicy(provider="speedup-priced", base_url="http://127.0.0.1:9/v1"), compat=OpenAIChatCompat()
    )
    register_provider(definition, metadata_namespaces=("openai",))
    return "speedup-priced"


@pytest.mark.parametrize(
    ("model", "priced"),
    [("openai/gpt-4o-mini", True), ("openai/mock-model", False), ("speedup-priced/gpt-4o-mini", True)],
)
def test_cached_answers_equal_dspys_own(
    model: str, priced: bool, mock: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    priced_endpoint()
    lm = dspy.LM(model, api_base=f"{mock.url}/v1", api_key="k", cache=False, num_retries=0)
    first, second = dspy_answers(lm), dspy_answers(lm)  # the second from the caches
    uncached = answers_without_speedups(lm, monkeypatch)
    assert first == uncached
    assert second == uncached
    cost, details = uncached["cost"]  # type: ignore[misc]
    assert (cost is not None and cost > 0) is priced, details
    assert uncached["usage"]["prompt_tokens"] == 1200  # type: ignore[index]


def counting(func: Callable[..., object], calls: list[tuple[object, ...]]) -> Callable[..., object]:
    def counted(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return func(*args, **kwargs)

    return counted


def test_unknown_model_is_looked_up_once_per_process(mock: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    lm = dspy.LM("openai/never-heard-of-it", api_base=f"{mock.url}/v1", api_key="k", cache=False)
    dspy_answers(lm)
    lookups: list[tuple[object, ...]] = []
    monkeypatch.setattr(dspy_speedups, "_original_model_info", counting(model_metadata.model_info, lookups))
    for _ in range(3):
        dspy_answers(lm)
    assert lookups == []
    other = dspy.LM("openai/another-unknown", api_base=f"{mock.url}/v1", api_key="k", cache=False)
    dspy_answers(other)
    assert {args[1] for args in lookups} == {"another-unknown"}


def test_cached_metadata_entries_are_read_only() -> None:
    entry = costs.model_info("openai-chat", "gpt-4o-mini")
    assert entry == model_metadata.model_info("openai-chat", "gpt-4o-mini")
    with pytest.raises(TypeError):
        entry["input_cost_per_token"] = 0  # type: ignore[index]
    assert model_metadata.model_info("openai-chat", "gpt-4o-mini") is not model_metadata.model_info(
        "openai-chat", "gpt-4o-mini"
    )  # DSPy's public function still hands every caller its own copy
