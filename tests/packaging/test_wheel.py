"""The wheel, installed into a fresh virtualenv, serves a dspy-cli project from that environment.

Slow (marked ``slow``): it builds the wheel, creates a virtualenv holding newer releases than
requirements.txt pins (as a dspy-cli user's does), installs the wheel and, next to it, the
project's own package ``acme_text`` (which the server does not depend on) with pip (nothing the
venv held may change, no test or kit tool may come in),
then runs the installed ``dspy-django serve --workers 2`` (gunicorn, uvicorn workers) in a copy of
the fixture project and calls a program whose module imports ``acme_text``. Installs resolve
offline from the test's wheelhouse (wheelhouse.py); the first run on a machine fills it.
"""

import json
import subprocess
import sys
import time
import tomllib
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.packaging.requirements import TOOLS, declared, optional, runtime_pins
from tests.packaging.served import applied_migrations, project_env
from tests.packaging.wheelhouse import build_requirements, pins_file, wheel_requirements, wheelhouse
from tests.support import DSPY_CLI_PROJECT, ROOT, Running, free_port, project_copy, stop, wait_until_ready

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGES = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
# Newer than requirements.txt's pins, inside the ranges: what dspy-cli 0.1.13 brought into the
# venv of issue 25 (uvicorn, OpenTelemetry's API, httpx2), and Django's next patch release.
NEWER_RELEASES = [
    "uvicorn[standard]==0.55.0",
    "Django==5.2.20",
    "opentelemetry-api==1.45.3",
    "httpx2==2.17.0",
]
# What the server would write if it took site-packages for its data directory.
DATA_NAMES = ("db.sqlite3", "staticfiles", "prometheus_multiproc")


def installed(python: Path) -> dict[str, str]:
    """The distributions a virtualenv holds: canonical name -> version."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "--isolated", "--python", python, "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {canonicalize_name(entry["name"]): entry["version"] for entry in json.loads(listed.stdout)}


def pip_offline(*args: object) -> None:
    """pip without the machine's configuration (indexes, certificates): everything comes from ``wheels``."""
    subprocess.run([sys.executable, "-m", "pip", "--quiet", "--isolated", *map(str, args)], check=True)


def canonical(requirement: str) -> tuple[str, frozenset[str], str, str]:
    parsed = Requirement(requirement)
    name = parsed.name.lower().replace("_", "-")
    return name, frozenset(parsed.extras), str(parsed.specifier), str(parsed.marker or "")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    wheels = wheelhouse(build_requirements(ROOT))
    pip_offline("wheel", "--no-deps", "--no-index", "--find-links", wheels, "--wheel-dir", dist, ROOT)
    return next(dist.glob("dspy_django-*.whl"))


def test_the_wheel_holds_every_file_of_its_packages_and_the_command(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n) for n in names if n.endswith(".dist-info/entry_points.txt"))
    # What hatchling should ship: tracked and untracked-but-not-ignored files of the packages.
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *PACKAGES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert any(name.endswith(".html") for name in listed)  # templates are among them
    assert sorted(set(listed) - names) == []
    assert {name for name in names if name.startswith("loadtest/")} == {
        "loadtest/__init__.py",
        "loadtest/mock_llm.py",
    }
    assert not [name for name in names if name.startswith(("tests/", "docs/")) or "__pycache__" in name]
    assert b"dspy-django = dspysite.cli:main" in entry_points


def test_the_wheel_declares_pyproject_ranges(wheel: Path) -> None:
    expected = [*map(str, declared()), *(f'{r}; extra == "tracing"' for r in optional())]
    assert sorted(map(canonical, wheel_requirements(wheel))) == sorted(map(canonical, expected))


def test_installed_next_to_newer_releases_it_keeps_them_and_serves_a_project(
    wheel: Path, tmp_path: Path, mock: Running
) -> None:
    """A dspy-cli user's venv already holds newer releases than requirements.txt pins (issue 25)."""
    project = project_copy(DSPY_CLI_PROJECT, tmp_path, mock.url)
    own_package = project / "packages" / "acme_text"
    venv = tmp_path / "venv"
    # No pip inside: pip runs from here against the new interpreter (saves ensurepip's ~20 s).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    builds = [*build_requirements(ROOT), *build_requirements(own_package)]
    # The tested releases of everything else: requirements.txt's pins, but for the newer ones.
    newer = {canonicalize_name(Requirement(line).name) for line in NEWER_RELEASES}
    pins = [str(pin) for pin in runtime_pins() if canonicalize_name(pin.name) not in newer]
    wheels = wheelhouse([*wheel_requirements(wheel), *builds, *NEWER_RELEASES], constraints=pins)
    offline = ["install", "--no-index", "--find-links", wheels, "--no-compile"]
    pip_offline("--python", python, *offline, *NEWER_RELEASES)
    before = installed(python)
    # One pip run puts the server and, next to it, the project's own package into the project's venv.
    pip_offline("--python", python, *offline, "--constraint", pins_file(tmp_path, pins), wheel, own_package)
    after = installed(python)
    assert {
        name: (version, after.get(name)) for name, version in before.items() if after.get(name) != version
    } == {}
    # What the wheel brought is the server's: no test, lint or load-test tool among it.
    assert sorted(set(after) & TOOLS) == []
    # Where the server's code comes from, asked the way the server will run: in the project, clean env.
    where = "import dspysite, sysconfig; print(sysconfig.get_paths()['purelib'], dspysite.__file__)"
    located = subprocess.run(
        [python, "-c", where], cwd=project, env=project_env(), capture_output=True, text=True, check=True
    )
    site, code = located.stdout.split()
    assert Path(code).is_relative_to(site)
    assert Path(site).is_relative_to(venv)

    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [venv / "bin" / "dspy-django", "serve", "--workers", "2", "--port", str(port)],
            cwd=project,
            env=project_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        # Two workers import DSPy from a virtualenv with no bytecode yet.
        wait_until_ready(f"{url}/health/live", server, timeout_s=240)
        request_id = f"wheel-{uuid.uuid4().hex[:8]}"
        response = httpx.post(
            f"{url}/SummarizeTicketPredict",
            json={"ticket": "Please call back, or write to bo@example.com"},
            headers={"X-Request-ID": request_id},
            timeout=60,
        )
        assert response.status_code == 200, log_path.read_text()
        summary = response.json()["summary"]
        # The mock echoes the ticket as the model saw it: acme_text, installed in the venv, redacted it.
        assert "[email]" in summary
        assert "bo@example.com" not in summary

        # Migrations ran into the project's own SQLite database, and the server writes its log there.
        assert {"telemetry", "apikeys", "auth"} <= applied_migrations(project / ".dspy-django" / "db.sqlite3")
        assert wait_for_logged(url, "SummarizeTicketPredict", request_id)
        assert (project / ".dspy-django" / "prometheus_multiproc").is_dir()
    finally:
        stop(server)
    assert [name for name in DATA_NAMES if list(Path(site).glob(f"{name}*"))] == []


def wait_for_logged(url: str, program: str, request_id: str, timeout_s: float = 30.0) -> bool:
    """Whether the call's inference record reaches ``/api/logs`` (the writer flushes within a second)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        logs = httpx.get(f"{url}/api/logs/{program}", params={"limit": 10}, timeout=10).json()["logs"]
        if any(entry["request_id"] == request_id for entry in logs):
            return True
        time.sleep(0.2)
    return False
