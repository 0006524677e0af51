"""Which module instance serves a call: ``instance_mode: shared | pool | per_request`` per program.

Most programs can be shared by every concurrent call: DSPy's ``Predict`` only reads its state
(signature, demos) when called. Some cannot: ``BestOfN`` and ``Refine`` count down a shared
``fail_count``, and a user's module may keep ``self.last_...`` across an ``await``. For those:

* ``pool``: N copies built at start-up (``pool_size``, default the program's ``max_concurrent``);
  a call takes a free one and gives it back when its code has finished (for a sync program that
  timed out: when its worker thread is done, not when the 504 is sent). No free copy: 429.
* ``per_request``: a fresh copy (a *fork*) for every call.

A fork copies the module's structure and state but never an LM: a copied ``dspy.LM`` would get its
own connection pool (new upstream connections for every request) and its own history. Forks use
the very same LM objects as the original, and the program's LM reaches them through
``dspy.context`` like it reaches the shared instance.
"""

import copy
import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from types import BuiltinFunctionType, FunctionType, MethodType, ModuleType
from typing import Any, Literal, Protocol

import dspy

logger = logging.getLogger(__name__)

InstanceMode = Literal["shared", "pool", "per_request"]

# Never looked into when searching a module for LMs: they cannot hold one (as state).
_LEAVES = (str, bytes, int, float, complex, bool, type(None), type, ModuleType, FunctionType,
           BuiltinFunctionType)  # fmt: skip


def lms_in(root: Any) -> list[dspy.BaseLM]:
    """Every LM reachable from ``root`` through attributes and containers (what a deepcopy would copy)."""
    found: dict[int, dspy.BaseLM] = {}
    seen: set[int] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _LEAVES):
            continue
        seen.add(id(obj))
        if isinstance(obj, dspy.BaseLM):
            found[id(obj)] = obj
            continue
        if isinstance(obj, MethodType):  # deepcopy copies a bound method's object
            stack.append(obj.__self__)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset | deque):
            stack.extend(obj)
        else:
            stack.extend(getattr(obj, "__dict__", {}).values())
    return list(found.values())


def fork(module: dspy.Module, shared: Iterable[Any] = ()) -> dspy.Module:
    """A copy of ``module`` with its own state, sharing its LMs (and ``shared`` objects) with it."""
    keep = [*lms_in(module), *shared]
    memo: dict[int, Any] = {id(obj): obj for obj in keep}
    try:
        return copy.deepcopy(module, memo)
    except Exception:  # noqa: BLE001 - something in it cannot be deep-copied: go attribute by attribute
        return _fork_by_attribute(module, {id(obj): obj for obj in keep})


def _fork_by_attribute(module: Any, memo: dict[int, Any]) -> Any:
    """DSPy's ``BaseModule.deepcopy`` fallback, with the LMs kept: sub-modules forked, the rest
    deep-copied where possible and shared where not (as DSPy does)."""
    if id(module) in memo:
        return memo[id(module)]
    new = module.__class__.__new__(module.__class__)
    memo[id(module)] = new
    for name, value in module.__dict__.items():
        if isinstance(value, dspy.BaseModule):
            setattr(new, name, _fork_by_attribute(value, memo))
            continue
        try:
            setattr(new, name, copy.deepcopy(value, memo))
        except Exception:  # noqa: BLE001
            logger.warning("%s.%s cannot be copied: forks share it", type(module).__name__, name)
            setattr(new, name, value)
    return new


def plain_state(module: dspy.Module) -> dict[str, str]:
    """What a call can change in a module, comparable before and after: DSPy's saved state (demos,
    instructions) and every plain-data attribute (numbers, strings, lists of them...) of the
    module and its sub-modules, such as ``BestOfN.fail_count`` or a ``self.last_question``."""
    state = {"dspy state": json.dumps(module.dump_state(), sort_keys=True, default=repr)}
    for path, sub in module.named_sub_modules():
        for name, value in vars(sub).items():
            if _is_plain(value):
                state[f"{path}.{name}"] = repr(value)
    return state


def _is_plain(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str | bytes | int | float | bool | type(None)):
        return True
    if depth < 3 and isinstance(value, list | tuple | set | frozenset):
        return all(_is_plain(item, depth + 1) for item in value)
    if depth < 3 and isinstance(value, dict):
        return all(_is_plain(k, depth + 1) and _is_plain(v, depth + 1) for k, v in value.items())
    return False


class InstancesBusy(Exception):
    """Every instance of the program's pool is in use (the caller answers 429)."""


class Lease:
    """One call's own instance (``pool``, ``per_request``), given back exactly once.

    Taken when the call enters ``async with``, given back when it leaves, unless it was handed to a
    worker thread (:meth:`in_thread`): then the hand-off gives it back.
    """

    __slots__ = ("_handed", "_source", "instance")

    def __init__(self, source: "InstancePool | PerRequest") -> None:
        self._source = source
        self._handed = False

    async def __aenter__(self) -> "Lease":
        instance = self._source.acquire()
        if instance is None:
            raise InstancesBusy
        self.instance = instance
        return self

    async def __aexit__(self, *_: object) -> None:
        if not self._handed:
            self._source.release(self.instance)

    def in_thread(self, on_done: Callable[[], None]) -> "ThreadHandoff":
        self._handed = True
        return ThreadHandoff(self.instance, self._source.release, on_done)


class SharedLease(Lease):
    """``shared``: one lease for every call at once, the loaded instance, nothing to give back
    (no allocation on the way of a native call)."""

    __slots__ = ()

    def __init__(self, instance: dspy.Module) -> None:
        self.instance = instance

    async def __aenter__(self) -> "SharedLease":
        return self

    async def __aexit__(self, *_: object) -> None:
        pass

    def in_thread(self, on_done: Callable[[], None]) -> "ThreadHandoff":
        return ThreadHandoff(self.instance, None, on_done)


class ThreadHandoff:
    """A leased instance run by a worker thread, given back with ``on_done`` (e.g. the thread's
    pool slot) exactly once: by the thread when it finishes, not when the call ends (a timed-out
    sync call keeps its thread, and its instance, until its LM call returns); by the call when it
    leaves ``async with`` if the thread never started (cancelled while queued: it then runs nothing).
    """

    __slots__ = ("_claimed", "_on_done", "_release", "instance")

    def __init__(
        self,
        instance: dspy.Module,
        release: Callable[[dspy.Module], None] | None,
        on_done: Callable[[], None],
    ) -> None:
        self.instance = instance
        self._release = release
        self._on_done = on_done
        self._claimed = threading.Lock()  # taken, never released, by the thread or the call: the first wins

    async def __aenter__(self) -> Callable[..., Any]:
        return self.run

    async def __aexit__(self, *_: object) -> None:
        if self._claimed.acquire(blocking=False):  # the thread never started
            self._give_back()

    def run(self, **kwargs: Any) -> Any:
        """The call, in the worker thread."""
        if not self._claimed.acquire(blocking=False):
            raise RuntimeError("the call ended before its worker thread started")
        try:
            return self.instance(**kwargs)
        finally:
            self._give_back()

    def _give_back(self) -> None:
        if self._release is not None:
            self._release(self.instance)
        self._on_done()


class InstanceSource(Protocol):
    """Where a call gets its instance: ``async with source.lease() as lease: lease.instance``."""

    def lease(self) -> Lease: ...


class SharedInstance:
    """``shared``: the loaded instance, for every call at once."""

    def __init__(self, instance: dspy.Module) -> None:
        self.instance = instance
        self._lease = SharedLease(instance)

    def lease(self) -> Lease:
        return self._lease


class InstancePool:
    """``pool``: pre-built forks, one per concurrent call. Safe to give back from any thread."""

    def __init__(self, template: dspy.Module, size: int, shared: Iterable[Any] = ()) -> None:
        shared = list(shared)
        self._free: deque[dspy.Module] = deque(fork(template, shared) for _ in range(size))

    def lease(self) -> Lease:
        return Lease(self)

    def acquire(self) -> dspy.Module | None:
        """A free instance, or None when all are busy (deque pops are atomic: no lock needed)."""
        try:
            return self._free.pop()
        except IndexError:
            return None

    def release(self, instance: dspy.Module) -> None:
        self._free.append(instance)


class PerRequest:
    """``per_request``: a fork of the loaded instance for every call."""

    def __init__(self, template: dspy.Module, shared: Iterable[Any] = ()) -> None:
        self.template = template
        self.shared = list(shared)

    def lease(self) -> Lease:
        return Lease(self)

    def acquire(self) -> dspy.Module:
        return fork(self.template, self.shared)

    def release(self, instance: dspy.Module) -> None:
        pass


def build_instances(
    mode: InstanceMode, template: dspy.Module, size: int, shared: Iterable[Any]
) -> InstanceSource:
    """The instance source of a program whose loaded instance is ``template``."""
    if mode == "pool":
        return InstancePool(template, size, shared)
    if mode == "per_request":
        return PerRequest(template, shared)
    return SharedInstance(template)


def per_thread(template: dspy.Module, shared: Iterable[Any] = ()) -> Callable[..., Any]:
    """A callable that runs each thread's own fork of ``template`` (for ``dspy.Evaluate``, whose
    ``ParallelExecutor`` calls one program object from all its threads)."""
    local = threading.local()
    shared = list(shared)

    def call(**kwargs: Any) -> Any:
        instance = getattr(local, "instance", None)
        if instance is None:
            instance = local.instance = fork(template, shared)
        return instance(**kwargs)

    return call
