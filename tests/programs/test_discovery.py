"""Discovery: the MRO rule for native async, both layouts, name clashes and failed imports."""

import textwrap
from pathlib import Path

import dspy
import pytest

from programs.discovery import DiscoveryError, discover, is_native_async, module_sources
from tests.support import FIXTURES


class ForwardOnly(dspy.Module):
    def forward(self, question: str) -> str:
        return question


class Both(dspy.Module):
    def forward(self, question: str) -> str:
        return question

    async def aforward(self, question: str) -> str:
        return question


class AsyncOnly(dspy.Module):
    async def aforward(self, question: str) -> str:
        return question


class PredictForwardOnly(dspy.Predict):
    def forward(self, **kwargs: object) -> dspy.Prediction:
        return dspy.Prediction()


class BothThenForwardOverridden(Both):
    def forward(self, question: str) -> str:
        return question.upper()


class BothThenAforwardOverridden(Both):
    async def aforward(self, question: str) -> str:
        return question.upper()


@pytest.mark.parametrize(
    ("cls", "native"),
    [
        (ForwardOnly, False),
        (Both, True),
        (AsyncOnly, True),
        (dspy.Predict, True),
        (dspy.ChainOfThought, True),
        (PredictForwardOnly, False),
        (BothThenForwardOverridden, False),
        (BothThenAforwardOverridden, True),
    ],
)
def test_native_async_follows_the_most_specific_definition(cls: type, native: bool) -> None:
    assert is_native_async(cls) is native


def write_project(root: Path, package: str, files: dict[str, str]) -> Path:
    modules = root / "src" / package / "modules"
    modules.mkdir(parents=True)
    (root / "src" / package / "__init__.py").write_text("")
    (modules / "__init__.py").write_text("")
    for name, source in files.items():
        (modules / name).write_text(source)
    return root


PROGRAM = textwrap.dedent(
    """
    import dspy

    class {name}(dspy.Module):
        def forward(self, text: str) -> str:
            return text
    """
)


def test_dspy_cli_layout_is_discovered(tmp_path: Path) -> None:
    project = write_project(
        tmp_path,
        "layout_pkg",
        {
            "one.py": PROGRAM.format(name="First")
            + "\nfrom dspy import Predict  # imported, not defined here\n",
            "_private.py": PROGRAM.format(name="Hidden"),
            "two.py": PROGRAM.format(name="Second") + "\nclass _Helper(dspy.Module):\n    pass\n",
        },
    )
    sources = module_sources(Path("/unused"), str(project))
    assert [s.package for s in sources] == ["layout_pkg.modules"]
    found = discover(sources)
    assert sorted(spec.name for spec in found.specs) == ["First", "Second"]
    assert found.failures == []
    assert {spec.module_file.name for spec in found.specs} == {"one.py", "two.py"}


def test_failed_import_is_reported_and_others_still_load() -> None:
    found = discover(module_sources(Path("/unused"), str(FIXTURES / "broken_project")))
    assert [spec.name for spec in found.specs] == ["StillServed"]
    (failure,) = found.failures
    assert failure.module_file == "broken.py"
    assert failure.programs == ("LostProgram",)
    assert "a_module_that_does_not_exist" in failure.error


def test_duplicate_program_names_stop_discovery(tmp_path: Path) -> None:
    project = write_project(
        tmp_path, "dup_pkg", {"a.py": PROGRAM.format(name="Same"), "b.py": PROGRAM.format(name="Same")}
    )
    with pytest.raises(DiscoveryError, match="Same is defined twice"):
        discover(module_sources(Path("/unused"), str(project)))


@pytest.mark.parametrize("name", ["Programs", "health", "Metrics", "Docs"])
def test_names_colliding_with_builtin_routes_stop_discovery(tmp_path: Path, name: str) -> None:
    project = write_project(tmp_path, f"reserved_{name.lower()}", {"a.py": PROGRAM.format(name=name)})
    with pytest.raises(DiscoveryError, match="collides with the built-in route"):
        discover(module_sources(Path("/unused"), str(project)))


def test_project_without_modules_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DiscoveryError, match="no src/<package>/modules"):
        module_sources(Path("/unused"), str(tmp_path))


def test_bundled_examples_are_discovered() -> None:
    root = Path(__file__).resolve().parents[2]
    found = discover(module_sources(root, ""))
    assert {spec.name for spec in found.specs} >= {"QA", "AsyncQA"}
    assert {spec.name: spec.is_async for spec in found.specs}["QA"] is False
