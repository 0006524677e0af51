"""The checks every patch of DSPy's internals passes at start-up before it is installed.

The server replaces or wraps a few DSPy functions (:mod:`programs.dspy_speedups`, the upstream
wrapper in :mod:`programs.upstream`, the cost hook in :mod:`programs.usage`, the connection cap in
:mod:`programs.lms`). Each was written against the code of the DSPy versions in
:data:`MEASURED_VERSIONS`; another release may move, rename or change what it replaces, and a patch
applied to code it was not written for could answer wrongly. So each patch names the DSPy objects
it replaces or relies on, with a fingerprint of their source (``inspect.getsource``, SHA-256, first
16 hex digits) as it was on those versions (several when they differ). At start-up a patch is
installed only when DSPy's version is a measured one and every fingerprint matches; otherwise it
stays off, DSPy runs its own code, and one log line says which patch and why. The first check in a
process decides (a second would see the patch itself in place of DSPy's code). :func:`summary` is
the start-up line that says which patches are on.

``DSPY_DJANGO_PATCHES=off`` turns every patch off (DSPy as it ships), e.g. to measure what they
save (docs/PERFORMANCE.md).
"""

import hashlib
import importlib
import inspect
import logging
import os

import dspy

logger = logging.getLogger(__name__)

# The DSPy releases the patches were written and measured on (their code is the same on both); the
# speed-ups exist for 3.4's native engine only.
MEASURED_VERSIONS = frozenset({"3.4.0", "3.4.1"})

# Each patch's name -> whether it is on; in the order they were checked.
_state: dict[str, bool] = {}


def fingerprint(obj: object) -> str:
    """The first 16 hex digits of the SHA-256 of an object's source code."""
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]  # type: ignore[arg-type]


def resolve(path: str) -> object:
    """``dspy.clients.execution.execute`` or ``...transports._sync._ConnectionPool`` -> the object."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


def mismatch(
    relies_on: dict[str, str | tuple[str, ...]], versions: frozenset[str] = MEASURED_VERSIONS
) -> str | None:
    """Why a patch must stay off (a version or an object that differs), or None: it fits."""
    if os.environ.get("DSPY_DJANGO_PATCHES", "").strip().lower() == "off":
        return "DSPY_DJANGO_PATCHES=off"
    if dspy.__version__ not in versions:
        return f"written for DSPy {', '.join(sorted(versions))}"
    for path, expected in relies_on.items():
        try:
            found = fingerprint(resolve(path))
        except (ImportError, AttributeError, OSError, TypeError):
            return f"{path} not found"
        if found not in ((expected,) if isinstance(expected, str) else expected):
            return f"{path} differs from the code it was written for"
    return None


def applicable(
    name: str, relies_on: dict[str, str | tuple[str, ...]], versions: frozenset[str] = MEASURED_VERSIONS
) -> bool:
    """Whether the patch ``name`` may be installed; when not, one log line says why.

    ``versions``: the releases it was written and measured on, when not :data:`MEASURED_VERSIONS`
    (the upstream wrapper and the cost hook also have a DSPy 3.3 form: :mod:`programs.dspy_calls`).
    """
    if name in _state:
        return _state[name]
    reason = mismatch(relies_on, versions)
    _state[name] = reason is None
    if reason is not None:
        logger.warning("DSPy %s: patch %r off (%s): DSPy's own code runs", dspy.__version__, name, reason)
    return reason is None


def summary() -> str:
    """The start-up line: which patches are on and which off."""
    on = [name for name, active in _state.items() if active]
    off = [name for name, active in _state.items() if not active]
    return f"DSPy {dspy.__version__}: patches on: {', '.join(on) or 'none'}; off: {', '.join(off) or 'none'}"


def active(name: str) -> bool:
    return _state.get(name, False)
