"""``manage.py program_versions list|add|promote|rollback|history`` (docs/VERSIONS.md).

* ``list [<Program>]``: versions, oldest first, with their aliases;
* ``add <Program> <state.json> [--alias A] [--note TEXT]``: register a saved state (what
  ``module.save()`` wrote) for the program's current code; the same content twice is the same version;
* ``promote <Program> <version> [--alias production]``: point the alias at the version;
* ``rollback <Program> [--alias production]``: move the alias back to its previous target;
* ``history <Program> [--alias A]``: the alias moves, newest first.

Every running worker sees a move within a second (versions.live).
"""

import json
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from programs.program import Program
from programs.runtime import get_runtime
from versions import registry
from versions.routing import TargetInvalid
from versions.states import StateMismatch

BY = "manage.py"


class Command(BaseCommand):
    help = "List, add, promote and roll back program versions."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        listing = actions.add_parser("list", help="Versions and aliases of one program, or of every one")
        listing.add_argument("program", nargs="?")
        add = actions.add_parser("add", help="Register a saved state as a version")
        add.add_argument("program")
        add.add_argument("state", type=Path)
        add.add_argument("--alias", help="also point this alias at it")
        add.add_argument("--note", default="")
        promote = actions.add_parser("promote", help="Point an alias at a version")
        promote.add_argument("program")
        promote.add_argument("version")
        promote.add_argument("--alias", default=registry.PRODUCTION)
        rollback = actions.add_parser("rollback", help="Move an alias back to its previous target")
        rollback.add_argument("program")
        rollback.add_argument("--alias", default=registry.PRODUCTION)
        history = actions.add_parser("history", help="The moves of a program's aliases, newest first")
        history.add_argument("program")
        history.add_argument("--alias")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            getattr(self, f"_{action}")(options)
        except (StateMismatch, TargetInvalid, LookupError, registry.NothingToRollBack) as exc:
            raise CommandError(str(exc)) from None

    def _list(self, options: dict[str, Any]) -> None:
        names = [options["program"]] if options["program"] else sorted(get_runtime().programs)
        for name in names:
            for entry in registry.versions_listing(name):
                aliases = ", ".join(entry["aliases"]) or "-"
                self.stdout.write(
                    f"{name}\t{entry['version']}\t{aliases}\t{entry['created_at']}\t{entry['note']}"
                )

    def _add(self, options: dict[str, Any]) -> None:
        program = _program(options["program"])
        try:
            state = json.loads(options["state"].read_text())
        except (OSError, ValueError) as exc:
            raise CommandError(f"{options['state']}: {exc}") from None
        version, created = registry.register(program, state, note=options["note"], by=BY)
        self.stdout.write(
            f"{program.name} {version.label} {'registered' if created else 'already registered'}"
        )
        if options["alias"]:
            registry.set_alias(program.name, options["alias"], {"version": version.label}, by=BY)
            self.stdout.write(f"{program.name}@{options['alias']} -> {version.label}")

    def _promote(self, options: dict[str, Any]) -> None:
        program = _program(options["program"]).name
        registry.set_alias(program, options["alias"], {"version": options["version"]}, by=BY)
        self.stdout.write(f"{program}@{options['alias']} -> {options['version']}")

    def _rollback(self, options: dict[str, Any]) -> None:
        program = _program(options["program"]).name
        alias = registry.rollback(program, options["alias"], by=BY)
        self.stdout.write(f"{program}@{alias.name} -> {json.dumps(alias.target)}")

    def _history(self, options: dict[str, Any]) -> None:
        program = _program(options["program"]).name
        for move in registry.history_listing(program, options["alias"]):
            self.stdout.write(
                f"{move['at']}\t{move['alias']}\t{move['action']}\t{json.dumps(move['before'])} -> "
                f"{json.dumps(move['after'])}\t{move['by']}"
            )


def _program(name: str) -> Program:
    program = get_runtime().programs.get(name)
    if program is None:
        raise CommandError(f"no program {name!r} (served: {', '.join(sorted(get_runtime().programs))})")
    return program
