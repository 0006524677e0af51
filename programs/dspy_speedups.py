"""A narrow fix for DSPy 3.4.1's async LM path, measured on this server (docs/PERFORMANCE.md).

Per LM call DSPy runs four CPU-only steps through ``asyncio.to_thread`` (request preparation,
capability planning, engine routing, pricing) so that a cloud credential refresh can never block
the event loop. With a static API key none of them does I/O, and the four thread hops cost about
0.7 ms of CPU per call: a third of an async request's server CPU here. Inside a program call whose
LM uses a static key (``inline_lm_steps`` set by :mod:`programs.execution`), those steps run
inline; everything else still goes to a thread. This is the rule DSPy's bundled lm15 already
applies to its own request builders ("a static credential needs no thread").

The patch is installed only on the DSPy version it was measured on.
"""

import asyncio
import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import dspy

logger = logging.getLogger(__name__)

PATCHED_DSPY_VERSION = "3.4.1"
# DSPy functions that hop to a thread only to protect the loop from credential refreshes.
INLINE_STEPS = frozenset({"prepare", "capabilities", "_Routing._target", "_price_result"})

inline_lm_steps: ContextVar[bool] = ContextVar("inline_lm_steps", default=False)
_original_to_thread = asyncio.to_thread


def _step_name(func: Callable[..., Any]) -> str:
    target = getattr(func, "__func__", func)
    module = getattr(target, "__module__", "") or ""
    return target.__qualname__ if module.startswith("dspy.") else ""


async def _to_thread(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    if inline_lm_steps.get() and _step_name(func) in INLINE_STEPS:
        return func(*args, **kwargs)
    return await _original_to_thread(func, *args, **kwargs)


def install() -> bool:
    """Install once per process; returns whether the patch is active."""
    if dspy.__version__ != PATCHED_DSPY_VERSION:
        logger.warning(
            "DSPy %s: async LM steps keep their thread hops (speedup measured on %s only)",
            dspy.__version__,
            PATCHED_DSPY_VERSION,
        )
        return False
    asyncio.to_thread = _to_thread
    return True
