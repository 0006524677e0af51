"""pyproject.toml's ranges and requirements.txt's pins describe the same dependencies.

The wheel declares ranges (it installs into someone else's environment); CI, ``make run`` and the
image install the pins. A dependency added to one list and not the other, or a pin moved outside
its range (a release the ranges claim to support but CI never ran), fails here, in the fast tests.
"""

import shlex

from packaging.utils import canonicalize_name

from tests.packaging import requirements
from tests.packaging.requirements import by_name, declared, optional, pinned_version, runtime_pins
from tests.support import ROOT


def test_the_runtime_pins_and_the_declared_ranges_name_the_same_packages() -> None:
    ranges, pins = by_name([*declared(), *optional()]), by_name(runtime_pins())
    assert sorted(set(pins) - set(ranges)) == [], "add these to pyproject.toml's [project] dependencies"
    assert sorted(set(ranges) - set(pins)) == [], "pin these in requirements.txt's runtime section"
    assert {name: sorted(r.extras) for name, r in ranges.items()} == {
        name: sorted(r.extras) for name, r in pins.items()
    }


def test_every_pin_is_inside_its_range() -> None:
    ranges = by_name([*declared(), *optional()])
    outside = {
        name: f"{pinned_version(pin)} not in {ranges[name].specifier}"
        for name, pin in by_name(runtime_pins()).items()
        if name in ranges and not ranges[name].specifier.contains(pinned_version(pin))
    }
    assert outside == {}


def test_every_range_has_a_lower_and_an_upper_bound() -> None:
    for requirement in [*declared(), *optional()]:
        operators = {specifier.operator for specifier in requirement.specifier}
        assert operators == {">=", "<"}, f"{requirement}: >= the oldest release tested, < the next major"


def test_no_test_or_kit_tool_is_a_runtime_dependency() -> None:
    tools = {canonicalize_name(name) for name in requirements.TOOLS}
    assert tools <= set(by_name(requirements.tooling_pins())), (
        "the tools are in requirements.txt's tooling section"
    )
    assert set(by_name([*declared(), *optional()])) & tools == set()


def docker_installs() -> list[list[str]]:
    """The Dockerfile's ``pip install`` commands, each as its arguments (continuations joined)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    commands = (
        part.strip() for line in text.splitlines() if line.startswith("RUN ") for part in line[4:].split("&&")
    )
    return [shlex.split(command)[2:] for command in commands if command.startswith("pip install")]


def test_the_image_installs_the_package_at_the_pinned_releases_and_no_tool() -> None:
    (arguments,) = docker_installs()
    assert ".[tracing]" in arguments  # the package: pyproject.toml's dependencies and the tracing extra
    assert "-r" not in arguments and "--requirement" not in arguments  # never requirements.txt's tools
    assert "--constraint" in arguments  # at requirements.txt's pins
