"""``manage.py startprogram NAME -s "question -> answer" [-m Predict|ChainOfThought|ReAct]``.

Writes ``<modules dir>/<name>.py`` (a typed ``forward`` and a native ``aforward``) and a test stub,
after validating the name and the signature. Never overwrites a file.
"""

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from programs.discovery import DiscoveryError, module_sources
from programs.scaffold import MODULES, ScaffoldError, plan, write


class Command(BaseCommand):
    # No system checks: they import the URLs, which load the runtime (and exit on a bad config).
    requires_system_checks: list[str] = []
    help = (
        "Create a DSPy program from a signature: <modules>/<name>.py with a typed forward and an "
        "async aforward (the server's native path), plus a test stub. Existing files are never overwritten."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "name", help="Program name: the class name and route (SummarizeText or summarize_text)"
        )
        parser.add_argument(
            "-s", "--signature", required=True, help='DSPy signature, e.g. "question -> answer" or '
            '"text: str, hints: list[str] -> label: Literal[\'a\', \'b\'], confidence: float"',
        )  # fmt: skip
        parser.add_argument(
            "-m", "--module", default="Predict",
            help=f"DSPy module: {', '.join(sorted(set(MODULES.values())))} (CoT is ChainOfThought)",
        )  # fmt: skip
        parser.add_argument(
            "--directory", type=Path,
            help="Where the module goes (default: programs/modules; in a dspy-cli project src/<pkg>/modules)",
        )  # fmt: skip
        parser.add_argument(
            "--package", help="Import path of --directory for the test (default: derived from the directory)"
        )
        parser.add_argument(
            "--tests-dir", type=Path,
            help="Where the test stub goes (default: tests/programs here, tests/ in a dspy-cli project)",
        )  # fmt: skip
        parser.add_argument("--no-test", action="store_true", help="Do not write a test stub")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            program = plan(options["name"], options["signature"], options["module"])
            directory, package = self._target(options)
            tests_dir = None if options["no_test"] else self._tests_dir(options)
            written = write(program, directory, package, tests_dir)
        except (ScaffoldError, DiscoveryError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Created {written.module_file} ({program.class_name}, dspy.{program.dspy_module})")
        if written.test_file is not None:
            self.stdout.write(f"Created {written.test_file}")
        self.stdout.write(f"Route: POST /{program.class_name} (also /{program.class_name}/batch, /stream)")

    def _target(self, options: dict[str, Any]) -> tuple[Path, str]:
        if options["directory"] is not None:
            directory = options["directory"].resolve()
            return directory, options["package"] or _package_of(directory)
        sources = module_sources(settings.BASE_DIR, settings.DSPY_PROJECT_DIR)
        if len(sources) > 1:
            found = ", ".join(str(source.directory) for source in sources)
            raise ScaffoldError(f"several modules directories ({found}); choose one with --directory")
        return sources[0].directory, options["package"] or sources[0].package

    def _tests_dir(self, options: dict[str, Any]) -> Path:
        if options["tests_dir"] is not None:
            return options["tests_dir"].resolve()
        if settings.DSPY_PROJECT_DIR:
            return Path(settings.DSPY_PROJECT_DIR).expanduser().resolve() / "tests"
        return Path(settings.BASE_DIR) / "tests" / "programs"


def _package_of(directory: Path) -> str:
    """``.../src/pkg/modules`` -> ``pkg.modules``: the directories above that are packages."""
    parts = [directory.name]
    parent = directory.parent
    while (parent / "__init__.py").exists():
        parts.insert(0, parent.name)
        parent = parent.parent
    return ".".join(parts)
