"""The wheel's package list (pyproject.toml) names every top-level package of the repository.

A new app (``scheduling/``, ``mcp/``, ...) that is not listed would be missing from every install
while the checkout runs fine; this fails first, in the fast tests.
"""

import tomllib

from tests.support import ROOT

# Not part of the server: the tests, and the load-test kit (only its mock LLM ships, force-included).
NOT_SHIPPED = {"tests", "loadtest"}


def test_every_top_level_package_is_in_the_wheel() -> None:
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    packages = {init.parent.name for init in ROOT.glob("*/__init__.py")} - NOT_SHIPPED
    listed = set(wheel["packages"])
    assert packages - listed == set(), (
        "add these packages to [tool.hatch.build.targets.wheel] packages in pyproject.toml"
    )
    assert listed - packages == set(), "pyproject.toml lists packages that do not exist"
