"""``manage.py programs``: what discovery finds, and whether each program would serve.

For every program: name, module file, async or sync, model alias, schema status; then the module
files that failed to import. No LM is built and no network is used. Exit status 1 when anything
would fail to load (usable in CI).
"""

import json
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from programs.config import ConfigError, config_path, load_config
from programs.discovery import DiscoveryError, ProgramSpec, discover, module_sources
from programs.schemas import build_input_schema, build_output_schema, entry_point


class Command(BaseCommand):
    # No system checks: they import the URLs, which load the runtime (and exit on a bad config).
    requires_system_checks: list[str] = []
    help = "List the programs discovery finds: name, file, async/sync, model, schema status, load errors."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print JSON instead of a table")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            path = config_path(settings.DSPY_CONFIG, settings.DSPY_PROJECT_DIR, settings.BASE_DIR)
            config = load_config(path).config
            found = discover(module_sources(settings.BASE_DIR, settings.DSPY_PROJECT_DIR))
        except (ConfigError, DiscoveryError) as exc:
            raise CommandError(str(exc)) from None
        rows = [_describe(spec, config) for spec in found.specs]
        failures = [
            {"file": failure.module_file, "programs": list(failure.programs), "error": failure.error}
            for failure in found.failures
        ]
        if options["json"]:
            self.stdout.write(json.dumps({"config": str(path), "programs": rows, "load_errors": failures}))
        else:
            self._table(path, rows, failures)
        if failures or any(not row["schema"].startswith("ok") for row in rows):
            raise CommandError("some programs would not serve (see above)", returncode=1)

    def _table(self, path: Path, rows: list[dict[str, Any]], failures: list[dict[str, Any]]) -> None:
        self.stdout.write(f"Config: {path}")
        header = ("PROGRAM", "FILE", "EXECUTION", "MODEL", "SCHEMA")
        table = [header, *[(r["name"], r["file"], r["execution"], r["model"], r["schema"]) for r in rows]]
        widths = [max(len(str(line[i])) for line in table) for i in range(len(header) - 1)]
        for line in table:
            cells = [str(cell).ljust(width) for cell, width in zip(line, widths, strict=False)]
            self.stdout.write("  ".join([*cells, str(line[-1])]).rstrip())
        if not rows:
            self.stdout.write("(no programs found)")
        for failure in failures:
            names = ", ".join(failure["programs"]) or "?"
            self.stdout.write(self.style.ERROR(f"LOAD ERROR {failure['file']} ({names}): {failure['error']}"))


def _describe(spec: ProgramSpec, config: Any) -> dict[str, Any]:
    try:
        model = config.alias_for(spec.name)
    except ConfigError as exc:
        model = f"error: {exc}"
    try:
        method = entry_point(spec.cls, spec.is_async)
        inputs = build_input_schema(spec.name, method)
        build_output_schema(spec.name, method, spec.cls())
        schema = "ok (any object)" if inputs.free_form else "ok"
    except Exception as exc:  # noqa: BLE001 - reported per program, like a load failure
        schema = f"error: {type(exc).__name__}: {exc}"
    return {
        "name": spec.name,
        "file": _relative(spec.module_file),
        "execution": "async" if spec.is_async else "sync",
        "model": model,
        "schema": schema,
    }


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
