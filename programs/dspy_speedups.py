"""Narrow fixes for DSPy 3.4.1 costs on a serving hot path, measured here (docs/PERFORMANCE.md).

Each one removes work DSPy repeats on every LM call although its result cannot change while the
process runs. Each is installed only on the DSPy versions it was measured on, and only when the DSPy code it
replaces or relies on is the code it was written for (:mod:`programs.dspy_patches`: its name in
:data:`PATCHES`, the objects and their fingerprints); else it stays off with one log line.

1. Thread hops. Per LM call DSPy runs four CPU-only steps through ``asyncio.to_thread`` (request
   preparation, capability planning, engine routing, pricing) so that a cloud credential refresh
   can never block the event loop. With a static API key none of them does I/O, and the hops cost
   about 0.7 ms of CPU per call. Inside a program call whose LM uses a static key
   (``inline_lm_steps``, set by :mod:`programs.execution`) they run inline; anything else still
   goes to a thread. DSPy's bundled lm15 applies the same rule to its own request builders.
2. Offline routing, rebuilt per call. ``select_backend`` and ``capabilities.resolve`` construct a
   new lm15 engine and router to answer a question that depends only on the LM's configuration
   (their docstrings: "offline", "no provider client is constructed"), and the capability plan
   built on them reads the bundled model metadata (61 µs per call; 5 µs cached). Their answers
   are cached by that configuration and the environment variables routing reads, in a bounded
   cache.
3. ``serialize_for_json`` and ``parse_value`` build a pydantic ``TypeAdapter`` (a schema build) for
   every field value they format or parse; adapters are cached per type.
4. Timeouts that cost a task. lm15's async transport puts every pool acquire, write drain and socket
   read under its own ``wait_for``, which on Python 3.11 starts a helper task and an
   ``asyncio.wait`` per operation: three or more event-loop round trips even when the operation
   completes at once. Under load every round trip waits behind every other request's ready
   callbacks, so an async program paid ~7 ms at p50 over a sync one at 10 users. ``asyncio.timeout``
   (3.11+) times the operation in the caller's own task, with the same guarantee the helper exists
   for: a caller's cancellation is never turned into a timeout or a success.
5. A pool lock held across a system call. lm15's sync transport checks whether an idle connection
   went stale (a ``select()``) while holding the lock every checkout and checkin takes. The call
   drops the GIL; getting it back among a few hundred worker threads takes milliseconds, and every
   thread queued on the lock waits that long too: 29 ms at p50 (127 ms at p90) per checkout, with
   200 sync calls in flight on a 500 ms model. The check now runs after the connection is taken
   out of the pool, outside the lock.
6. Proxy settings, scanned per call. lm15 calls ``urllib.request.getproxies()`` for every request,
   which decodes and scans the whole environment: 37 µs with 35 variables, 344 µs with 300 (a
   Kubernetes pod's service variables), against ~1.7 ms of CPU for a whole request. They are read
   once per process, as httpx does when a client is created: set ``HTTPS_PROXY``/``NO_PROXY``
   before the server starts.
7. Keep-alive connections dropped above descriptor 1023. lm15 asks ``select()`` whether an idle
   connection went stale; ``select()`` refuses descriptors from 1024 up, and lm15 reads the
   refusal as "stale". A process holding more than ~1,000 sockets (clients included) would open
   a new connection, TLS handshake and all, for every LM call. The same test runs with ``poll()``.
8. Model metadata, scanned per call. Pricing looks the model up in DSPy's bundled metadata
   (~4,500 entries) twice per LM call (the response's model name, then the requested one): an exact
   key hit costs ~0.2 ms with its deep copy, a name the metadata does not know (any self-hosted
   ``openai/<name>``) a full scan of every entry's aliases, 0.5-2.5 ms. The answer depends only on
   the loaded metadata (fixed once loaded), the provider, the model name and the namespaces, so
   it is computed once per such key. The two DSPy modules that read it (pricing and capability
   plans) only read the entry; they get a read-only view of the cached one instead of a copy.
"""

import asyncio
import dataclasses
import functools
import logging
import os
import select
import socket
import types
from collections.abc import Awaitable, Callable, Hashable
from contextvars import ContextVar
from typing import Any

from dspy.adapters import utils as adapter_utils
from pydantic import TypeAdapter

from programs import dspy_patches

try:
    from dspy._vendor.lm15.transports import _async as lm15_async_transport
    from dspy._vendor.lm15.transports import _proxy as lm15_proxy
    from dspy._vendor.lm15.transports import _sync as lm15_sync_transport
    from dspy.clients import backend_selection, capabilities, costs, execution, model_metadata
except ImportError:  # a DSPy without them: install() finds the patches' objects missing, all stay off
    lm15_async_transport = lm15_proxy = lm15_sync_transport = None  # type: ignore[assignment]
    backend_selection = capabilities = costs = execution = model_metadata = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)
# DSPy functions that hop to a thread only to protect the loop from credential refreshes.
INLINE_STEPS = frozenset({"prepare", "capabilities", "_Routing._target", "_price_result"})
_CACHE_LIMIT = 1024

inline_lm_steps: ContextVar[bool] = ContextVar("inline_lm_steps", default=False)
_original_to_thread = asyncio.to_thread
_original_select_backend = getattr(backend_selection, "select_backend", None)
_original_resolve = getattr(capabilities, "resolve", None)
_original_wait_for = getattr(lm15_async_transport, "wait_for", None)
_original_capabilities = getattr(capabilities, "_capabilities", None)


def _step_name(func: Callable[..., Any]) -> str:
    target = getattr(func, "__func__", func)
    module = getattr(target, "__module__", "") or ""
    return target.__qualname__ if module.startswith("dspy.") else ""


async def _to_thread(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    if inline_lm_steps.get() and _step_name(func) in INLINE_STEPS:
        return func(*args, **kwargs)
    return await _original_to_thread(func, *args, **kwargs)


def _client_items(values: dict[str, Any] | None) -> tuple[tuple[str, str], ...]:
    keys = backend_selection.CLIENT_KEYS
    return tuple(sorted((key, repr(value)) for key, value in (values or {}).items() if key in keys))


class Same:
    """Hashes and compares by identity (declared providers hold dicts, so they are unhashable).

    Holding the object keeps its id from being reused while the cache entry exists.
    """

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Same) and other.obj is self.obj


def _routing_environment(model: str) -> tuple[str | None, ...]:
    """The variables ``select_backend`` reads: a gateway address switches a model to LiteLLM."""
    prefix = model.split("/", 1)[0].upper()
    names = (f"{prefix}_API_BASE", f"{prefix}_BASE_URL", "XAI_API_KEY")
    return tuple(os.environ.get(name) for name in names)


def _lm_key(lm: Any) -> Hashable:
    """Everything about an LM that routing reads; None when it cannot be keyed safely."""
    if not isinstance(getattr(lm, "_engine_spec", None), str):
        return None
    providers = tuple(Same(provider) for provider in lm._providers)
    environment = _routing_environment(lm.model)
    return (lm.model, lm.model_type, lm._engine_spec, _client_items(lm.kwargs), providers, environment)


class _BoundedCache:
    def __init__(self) -> None:
        self._values: dict[Hashable, Any] = {}

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        try:
            return self._values[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable setting: do not cache
            return compute()
        value = compute()
        if len(self._values) >= _CACHE_LIMIT:
            self._values.clear()
        self._values[key] = value
        return value


_selections = _BoundedCache()
_resolutions = _BoundedCache()
_capability_plans = _BoundedCache()


def _select_backend(lm: Any, options: dict[str, Any] | None = None) -> Any:
    key = _lm_key(lm)
    if key is None:
        return _original_select_backend(lm, options)
    selection = _selections.get_or_compute(
        (key, _client_items(options)), lambda: _original_select_backend(lm, options)
    )
    # Callers may change the client settings they get; each gets its own dict.
    return dataclasses.replace(selection, clients=dict(selection.clients))


def _resolve(lm: Any) -> Any:
    key = _lm_key(lm)
    if key is None:
        return _original_resolve(lm)
    return _resolutions.get_or_compute(key, lambda: _original_resolve(lm))


def _capabilities(lm: Any, options: dict[str, Any] | None = None) -> Any:
    key = _lm_key(lm)
    if key is None:
        return _original_capabilities(lm, options)
    return _capability_plans.get_or_compute(
        (key, _client_items(options)), lambda: _original_capabilities(lm, options)
    )


_model_infos = _BoundedCache()
_original_model_info = getattr(model_metadata, "model_info", None)


def _model_info(provider: str, model: str, *, namespaces: Any = None) -> types.MappingProxyType:
    """DSPy's ``model_info`` for readers that never change the entry, looked up once per key."""
    data = model_metadata._load()  # loaded once per process; the key holds it, so its id stays valid
    names = None if namespaces is None else tuple(namespaces)
    return _model_infos.get_or_compute(
        (Same(data), provider, model, names),
        lambda: types.MappingProxyType(_original_model_info(provider, model, namespaces=namespaces)),
    )


@functools.lru_cache(maxsize=_CACHE_LIMIT)
def _cached_type_adapter(annotation: Any) -> TypeAdapter:
    return TypeAdapter(annotation)


def _type_adapter(annotation: Any, *args: Any, **kwargs: Any) -> TypeAdapter:
    if args or kwargs:
        return TypeAdapter(annotation, *args, **kwargs)
    try:
        return _cached_type_adapter(annotation)
    except TypeError:  # unhashable annotation
        return TypeAdapter(annotation)


async def _wait_for(
    awaitable: Awaitable[Any],
    timeout: float | None,  # noqa: ASYNC109 - the signature lm15 calls
    *,
    cancel_result: Callable[[Any], None] | None = None,
) -> Any:
    """lm15's ``wait_for`` without the helper task.

    ``cancel_result`` exists because the helper task may finish acquiring a resource while the
    caller is being cancelled; awaited in the caller's task, the cancellation reaches the
    operation itself, and asyncio's streams and semaphores give the resource back themselves.
    """
    if timeout is None or timeout <= 0:
        return await _original_wait_for(awaitable, timeout, cancel_result=cancel_result)
    async with asyncio.timeout(timeout):
        return await awaitable


def _checkout(pool: Any, origin: tuple[str, str, int]) -> Any:
    """lm15's ``_ConnectionPool.checkout``, with the staleness check outside the pool's lock."""
    while True:
        with pool._lock:
            idle = pool._idle.get(origin)
            if not idle:
                return None
            conn = idle.pop()
            conn.in_use = True
            pool._in_use.add(conn)
        if not conn.is_stale():
            return conn
        pool.discard(conn)


def _idle_socket_unusable(sock: socket.socket) -> bool:
    """lm15's test for an idle keep-alive socket: readable (EOF, close_notify, stray bytes) or in error."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _sync_connection_is_stale(conn: Any) -> bool:
    return conn.closed or _idle_socket_unusable(conn.sock)


def _async_connection_is_stale(conn: Any) -> bool:
    if conn.closed:
        return True
    sock = conn.writer.get_extra_info("socket")
    return sock is None or _idle_socket_unusable(sock)


def _inline_thread_hops() -> None:
    asyncio.to_thread = _to_thread


def _cached_routing() -> None:
    execution.select_backend = _select_backend
    capabilities.select_backend = _select_backend
    capabilities.resolve = _resolve
    capabilities._capabilities = _capabilities


def _cached_type_adapters() -> None:
    adapter_utils.TypeAdapter = _type_adapter


def _timeouts_in_task() -> None:
    lm15_async_transport.wait_for = _wait_for


def _checkout_outside_lock() -> None:
    lm15_sync_transport._ConnectionPool.checkout = _checkout


def _proxies_once() -> None:
    lm15_proxy.getproxies = functools.cache(lm15_proxy.getproxies)


def _poll_stale_sockets() -> None:
    if not hasattr(select, "poll"):  # Windows: lm15's select() stays
        return
    lm15_sync_transport._SyncConnection.is_stale = _sync_connection_is_stale
    lm15_async_transport._AsyncConnection.is_stale = _async_connection_is_stale


def _cached_model_metadata() -> None:
    capabilities.model_info = _model_info
    costs.model_info = _model_info


_CLIENTS = "dspy.clients"
_LM15 = "dspy._vendor.lm15.transports"
# Each speedup: its name, what installs it, and the DSPy objects it replaces or relies on, with the
# fingerprint of their source on the measured versions (programs/dspy_patches.py).
PATCHES: tuple[tuple[str, Callable[[], None], dict[str, str | tuple[str, ...]]], ...] = (
    # 1. The steps it runs inline: CPU-only, and named as INLINE_STEPS says.
    ("inline thread hops", _inline_thread_hops, {
        f"{_CLIENTS}.execution.prepare": "804f2eb813e287a0",
        f"{_CLIENTS}.capabilities.capabilities": "972a953a4203cfa1",
        f"{_CLIENTS}.engines.lm15_engine._Routing._target": "2e834e2103ca4d66",
        f"{_CLIENTS}.execution._price_result": "fbcd0cf20d152b6d",
    }),
    # 2. The functions whose answers are cached, and the routing they read.
    ("cached routing", _cached_routing, {
        f"{_CLIENTS}.backend_selection.select_backend": "acf6b8071cd6b783",
        f"{_CLIENTS}.capabilities.resolve": "ee4a20f3b12d6beb",
        f"{_CLIENTS}.capabilities._capabilities": "e65e95ddf7faf685",
    }),
    # 3. The functions that build adapters (any TypeAdapter call still works: it is pydantic's).
    ("cached type adapters", _cached_type_adapters, {
        "dspy.adapters.utils.serialize_for_json": ("d987f156925b12b4", "989096592c125ae9"),  # 3.4.0, 3.4.1
        "dspy.adapters.utils.parse_value": "95a949226a906f50",
    }),
    # 4. lm15's wait_for, replaced.
    ("lm15 timeouts in the caller's task", _timeouts_in_task, {
        f"{_LM15}._async.wait_for": "1d555b56ea226eb4",
    }),
    # 5. The pool whose checkout is replaced (its lock, idle and in-use sets).
    ("lm15 staleness check outside the pool lock", _checkout_outside_lock, {
        f"{_LM15}._sync._ConnectionPool": "cb5b267efeb6334e",
    }),
    # 6. The module that calls getproxies per request.
    ("lm15 proxy settings read once", _proxies_once, {f"{_LM15}._proxy": "7e0f3ffcaffb441c"}),
    # 7. The connections whose is_stale is replaced.
    ("lm15 stale sockets by poll()", _poll_stale_sockets, {
        f"{_LM15}._sync._SyncConnection": "5b6d74936b183c43",
        f"{_LM15}._async._AsyncConnection": "acd6f74271571114",
    }),
    # 8. model_info, cached, and its two readers, which must only read the entry.
    ("cached model metadata", _cached_model_metadata, {
        f"{_CLIENTS}.model_metadata.model_info": ("040b8f6002a8b600", "dd661c30aaf68044"),  # 3.4.0, 3.4.1
        f"{_CLIENTS}.costs": "579be053f042e871",
        f"{_CLIENTS}.capabilities._capabilities": "e65e95ddf7faf685",
    }),
)  # fmt: skip


def install() -> list[str]:
    """Install, once per process, each speedup whose DSPy code is what it was written for.

    Returns the names of those now on; each one left off has logged one line saying why.
    """
    # Every check before any patch: two of them read the same DSPy function (_capabilities).
    fitting = [(name, apply) for name, apply, needs in PATCHES if dspy_patches.applicable(name, needs)]
    for _, apply in fitting:
        apply()
    return [name for name, _ in fitting]
