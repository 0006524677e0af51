"""The two lists of dependencies: pyproject.toml's ranges (the wheel's) and requirements.txt's pins."""

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import ROOT

# Tests, lint and the load-test kit (requirements.txt's tooling section): never the server's.
TOOLS = frozenset(
    {
        "pytest",
        "pytest-django",
        "pytest-xdist",
        "schemathesis",
        "locust",
        "psutil",
        "py-spy",
        "ruff",
        "vulture",
    }
)
# Where requirements.txt's runtime section ends: below it, what only tests and the kit use.
TOOLING_MARKER = "# Tests and tooling"


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def declared() -> list[Requirement]:
    """pyproject.toml's ``[project] dependencies``: the ranges the wheel always installs."""
    return [Requirement(line) for line in _project()["dependencies"]]


def optional() -> list[Requirement]:
    """pyproject.toml's ``[project.optional-dependencies]``, every extra's (``tracing``)."""
    return [Requirement(line) for lines in _project()["optional-dependencies"].values() for line in lines]


def _pinned_sections() -> tuple[list[Requirement], list[Requirement]]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith(TOOLING_MARKER))

    def parsed(section: list[str]) -> list[Requirement]:
        stripped = (line.split("#", 1)[0].strip() for line in section)
        return [Requirement(line) for line in stripped if line]

    return parsed(lines[:end]), parsed(lines[end:])


def runtime_pins() -> list[Requirement]:
    """requirements.txt above ``# Tests and tooling``: the exact releases of the wheel's dependencies."""
    return _pinned_sections()[0]


def tooling_pins() -> list[Requirement]:
    """requirements.txt below ``# Tests and tooling``: tests, lint and the load-test kit."""
    return _pinned_sections()[1]


def by_name(requirements: list[Requirement]) -> dict[str, Requirement]:
    return {canonicalize_name(requirement.name): requirement for requirement in requirements}


def pinned_version(requirement: Requirement) -> str:
    (specifier,) = requirement.specifier
    assert specifier.operator == "==", f"{requirement}: requirements.txt pins exact releases"
    return specifier.version
