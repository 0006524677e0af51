"""Hatchling metadata hook: the wheel depends on requirements.txt's runtime section, pinned as written.

requirements.txt stays the one list of dependencies (``make install`` installs all of it); the
lines above ``# Tests and tooling`` are what the server needs at run time, so a runtime dependency
added there is a dependency of the wheel too.
"""

from pathlib import Path

from hatchling.metadata.plugin.interface import MetadataHookInterface

TOOLING_MARKER = "# Tests and tooling"


def runtime_requirements(path: Path) -> list[str]:
    """The requirement lines before the tooling marker, without comments and blank lines."""
    lines = path.read_text().splitlines()
    end = next((i for i, line in enumerate(lines) if line.startswith(TOOLING_MARKER)), None)
    if end is None:
        raise ValueError(f"{path}: no {TOOLING_MARKER!r} line ends the runtime section")
    requirements = (line.split("#", 1)[0].strip() for line in lines[:end])
    return [line for line in requirements if line]


class RuntimeRequirements(MetadataHookInterface):
    def update(self, metadata: dict) -> None:
        metadata["dependencies"] = runtime_requirements(Path(self.root) / "requirements.txt")
