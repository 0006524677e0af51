"""The packaging test's wheelhouse: wheels of every requirement it installs, downloaded once.

pip's HTTP cache stays cold on this project's machines (the index's answers are not cacheable), so
each fresh install would download ~100 MB again (2.5 minutes here). Instead the requirements are
downloaded into one directory the first time a set of them is seen (a stamp named for the set's
hash records it); builds and installs then resolve offline from it (``--no-index``), the same
resolution pip made while filling it. A changed requirement adds its wheels on the next run.
Delete the directory to start over.
"""

import email.parser
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

WHEELHOUSE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dspy-django-tests" / "wheels"


def build_requirements(project: Path) -> list[str]:
    """``[build-system] requires``: what pip's isolated build of the project installs."""
    return tomllib.loads((project / "pyproject.toml").read_text())["build-system"]["requires"]


def wheel_requirements(wheel: Path) -> list[str]:
    """The ``Requires-Dist`` lines of a built wheel's metadata."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.BytesParser().parsebytes(archive.read(name))
    return metadata.get_all("Requires-Dist") or []


def pins_file(directory: Path, pins: list[str]) -> Path:
    """A pip constraints file of ``pins`` (pip refuses extras in constraints: they are dropped)."""
    path = directory / "constraints.txt"
    path.write_text("".join(re.sub(r"\[[^]]*\]", "", pin) + "\n" for pin in sorted(pins)))
    return path


def wheelhouse(requirements: list[str], constraints: list[str] = ()) -> Path:
    """The wheelhouse, holding wheels for ``requirements`` and everything they depend on.

    ``constraints`` (``name==version`` pins) choose the releases of the ranges the requirements
    declare, so the wheelhouse holds the releases CI tested rather than whatever is newest today;
    installs from it take the same constraints (it may hold other releases too).
    """
    wanted = sorted(set(requirements))
    pins = sorted(set(constraints))
    key = hashlib.sha256("\n".join([sys.version, *wanted, "--", *pins]).encode()).hexdigest()[:16]
    stamp = WHEELHOUSE / ".downloaded" / key
    if not stamp.exists():
        stamp.parent.mkdir(parents=True, exist_ok=True)
        # Files already there are reused; only what is missing is downloaded.
        download = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(WHEELHOUSE), *wanted]
        with tempfile.TemporaryDirectory() as directory:
            if pins:
                download += ["--constraint", str(pins_file(Path(directory), pins))]
            subprocess.run(download, check=True)
        stamp.write_text("\n".join([*wanted, "--", *pins]) + "\n")
    return WHEELHOUSE
