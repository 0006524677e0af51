"""Find the DSPy programs to serve: public ``dspy.Module`` subclasses defined in module files.

Two layouts are understood: this project's ``programs/modules/*.py`` and a dspy-cli project's
``src/<package>/modules/*.py`` (``DSPY_PROJECT_DIR``). A file that fails to import is recorded as a
:class:`LoadFailure` and does not stop the others from loading.
"""

import ast
import importlib
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path

import dspy

from programs.gateways import Gateway, declared_gateways, install_import_alias

# Routes the service owns; a program may not take one of these names (compared case-insensitively).
RESERVED_NAMES = frozenset(
    {"admin", "api", "docs", "health", "mcp", "metrics", "openapi.json", "programs", "static", "ui"}
)


class DiscoveryError(Exception):
    """A discovery problem that must stop start-up (duplicate or reserved program names)."""


@dataclass(frozen=True)
class ModuleSource:
    """A directory of module files and the importable package it corresponds to."""

    directory: Path
    package: str
    import_root: Path


@dataclass(frozen=True)
class ProgramSpec:
    name: str
    cls: type[dspy.Module]
    module_file: Path
    is_async: bool
    # The gateway classes the module declares (dspy-cli's ``gateway`` attribute), in order.
    gateways: tuple[type[Gateway], ...] = ()


@dataclass(frozen=True)
class LoadFailure:
    module_file: str
    programs: tuple[str, ...]
    error: str


@dataclass
class Discovery:
    specs: list[ProgramSpec] = field(default_factory=list)
    failures: list[LoadFailure] = field(default_factory=list)


def module_sources(base_dir: Path, project_dir: str) -> list[ModuleSource]:
    """This repo's ``programs/modules``, or every ``src/<pkg>/modules`` of a dspy-cli project."""
    if not project_dir:
        return [ModuleSource(base_dir / "programs" / "modules", "programs.modules", base_dir)]
    src = Path(project_dir).expanduser().resolve() / "src"
    found = sorted(path for path in src.glob("*/modules") if path.is_dir())
    if not found:
        raise DiscoveryError(f"DSPY_PROJECT_DIR={project_dir}: no src/<package>/modules directory found")
    return [ModuleSource(path, f"{path.parent.name}.modules", src) for path in found]


def discover(sources: list[ModuleSource]) -> Discovery:
    result = Discovery()
    install_import_alias()  # ``from dspy_cli.gateway import ...`` in the modules about to load
    for source in sources:
        if str(source.import_root) not in sys.path:
            sys.path.insert(0, str(source.import_root))
        for path in sorted(source.directory.glob("*.py")):
            if path.name.startswith("_"):
                continue
            _discover_file(path, f"{source.package}.{path.stem}", result)
    _check_names(result.specs)
    return result


def _discover_file(path: Path, module_name: str, result: Discovery) -> None:
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import error is reported, the others still load
        result.failures.append(
            LoadFailure(path.name, _declared_classes(path), f"{type(exc).__name__}: {exc}")
        )
        return
    for name, cls in inspect.getmembers(module, inspect.isclass):
        if cls.__module__ == module.__name__ and not name.startswith("_") and issubclass(cls, dspy.Module):
            spec = ProgramSpec(name, cls, path, is_native_async(cls), declared_gateways(cls))
            result.specs.append(spec)


def _declared_classes(path: Path) -> tuple[str, ...]:
    """Best-effort names of the programs in a file that failed to import (for /health/ready)."""
    try:
        tree = ast.parse(path.read_text())
    except (SyntaxError, OSError, UnicodeDecodeError):
        return ()
    return tuple(n.name for n in tree.body if isinstance(n, ast.ClassDef) and not n.name.startswith("_"))


def _defining_class(cls: type, attribute: str) -> type | None:
    return next((klass for klass in cls.__mro__ if attribute in vars(klass)), None)


def is_native_async(cls: type) -> bool:
    """True when ``aforward`` is defined at least as specifically as ``forward``.

    A subclass of ``dspy.Predict`` that overrides only ``forward`` inherits Predict's ``aforward``,
    which would silently skip the override; such a class must run its ``forward`` in a thread.
    """
    async_owner = _defining_class(cls, "aforward")
    if async_owner is None:
        return False
    sync_owner = _defining_class(cls, "forward")
    return sync_owner is None or issubclass(async_owner, sync_owner)


def _check_names(specs: list[ProgramSpec]) -> None:
    seen: dict[str, ProgramSpec] = {}
    for spec in specs:
        if spec.name.lower() in RESERVED_NAMES:
            raise DiscoveryError(
                f"program {spec.name} ({spec.module_file.name}) collides with the built-in route "
                f"/{spec.name.lower()}; rename the class"
            )
        if spec.name in seen:
            raise DiscoveryError(
                f"program name {spec.name} is defined twice: {seen[spec.name].module_file} and "
                f"{spec.module_file}; class names are routes and must be unique"
            )
        seen[spec.name] = spec
