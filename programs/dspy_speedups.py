"""Narrow fixes for DSPy 3.4.1 costs on a serving hot path, measured here (docs/PERFORMANCE.md).

Each one removes work DSPy repeats on every LM call although its result cannot change while the
process runs. They are installed only on the DSPy version they were measured on.

1. Thread hops. Per LM call DSPy runs four CPU-only steps through ``asyncio.to_thread`` (request
   preparation, capability planning, engine routing, pricing) so that a cloud credential refresh
   can never block the event loop. With a static API key none of them does I/O, and the hops cost
   about 0.7 ms of CPU per call. Inside a program call whose LM uses a static key
   (``inline_lm_steps``, set by :mod:`programs.execution`) they run inline; anything else still
   goes to a thread. DSPy's bundled lm15 applies the same rule to its own request builders.
2. Offline routing, rebuilt per call. ``select_backend`` and ``capabilities.resolve`` construct a
   new lm15 engine and router to answer a question that depends only on the LM's configuration
   (their docstrings: "offline", "no provider client is constructed"). Their answers are cached by
   that configuration and the environment variables routing reads, in a bounded cache.
3. ``serialize_for_json`` and ``parse_value`` build a pydantic ``TypeAdapter`` (a schema build) for
   every field value they format or parse; adapters are cached per type.
"""

import asyncio
import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Hashable
from contextvars import ContextVar
from typing import Any

import dspy
from dspy.adapters import utils as adapter_utils
from dspy.clients import backend_selection, capabilities, execution
from pydantic import TypeAdapter

logger = logging.getLogger(__name__)

PATCHED_DSPY_VERSION = "3.4.1"
# DSPy functions that hop to a thread only to protect the loop from credential refreshes.
INLINE_STEPS = frozenset({"prepare", "capabilities", "_Routing._target", "_price_result"})
_CACHE_LIMIT = 1024

inline_lm_steps: ContextVar[bool] = ContextVar("inline_lm_steps", default=False)
_original_to_thread = asyncio.to_thread
_original_select_backend = backend_selection.select_backend
_original_resolve = capabilities.resolve


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


class _Same:
    """Hashes and compares by identity (declared providers hold dicts, so they are unhashable).

    Holding the object keeps its id from being reused while the cache entry exists.
    """

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj


def _routing_environment(model: str) -> tuple[str | None, ...]:
    """The variables ``select_backend`` reads: a gateway address switches a model to LiteLLM."""
    prefix = model.split("/", 1)[0].upper()
    names = (f"{prefix}_API_BASE", f"{prefix}_BASE_URL", "XAI_API_KEY")
    return tuple(os.environ.get(name) for name in names)


def _lm_key(lm: Any) -> Hashable:
    """Everything about an LM that routing reads; None when it cannot be keyed safely."""
    if not isinstance(getattr(lm, "_engine_spec", None), str):
        return None
    providers = tuple(_Same(provider) for provider in lm._providers)
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


def install() -> bool:
    """Install once per process; returns whether the fixes are active."""
    if dspy.__version__ != PATCHED_DSPY_VERSION:
        logger.warning(
            "DSPy %s: per-call overheads stay (fixes measured on DSPy %s only)",
            dspy.__version__,
            PATCHED_DSPY_VERSION,
        )
        return False
    asyncio.to_thread = _to_thread
    execution.select_backend = _select_backend
    capabilities.select_backend = _select_backend
    capabilities.resolve = _resolve
    adapter_utils.TypeAdapter = _type_adapter
    return True
