"""``manage.py datasets export NAME [-o FILE]`` and ``manage.py datasets import NAME FILE
[--program P]``: a dataset as JSONL (loop.datasets), the same lines ``GET /api/datasets/{name}/export``
streams; import creates the dataset when ``--program`` is given."""

import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from loop import datasets
from loop.models import Dataset


class Command(BaseCommand):
    help = "Export a dataset as JSONL, or import one"

    def add_arguments(self, parser: ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        export = actions.add_parser("export", help="Write the dataset's examples, one JSON object a line")
        export.add_argument("name")
        export.add_argument("-o", "--output", help="file to write (default: standard output)")
        load = actions.add_parser("import", help="Add the examples of a JSONL file (- for standard input)")
        load.add_argument("name")
        load.add_argument("file")
        load.add_argument("--program", help="create the dataset for this program if it does not exist")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "export":
            self._export(options["name"], options["output"])
        else:
            self._import(options["name"], options["file"], options["program"])

    def _export(self, name: str, output: str | None) -> None:
        dataset = _dataset(name)
        if output is None:
            sys.stdout.writelines(datasets.export_lines(dataset))
            return
        with Path(output).open("w", encoding="utf-8") as out:
            out.writelines(datasets.export_lines(dataset))

    def _import(self, name: str, file: str, program: str | None) -> None:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        with transaction.atomic():
            if program:
                dataset, _ = Dataset.objects.get_or_create(name=name, defaults={"program": program})
            else:
                dataset = _dataset(name)
            try:
                added = datasets.import_lines(dataset, text.splitlines())
            except datasets.DatasetError as exc:
                raise CommandError(str(exc)) from exc
        self.stdout.write(f"Added {added} examples to {name} ({dataset.items.count()} in all)")


def _dataset(name: str) -> Dataset:
    dataset = Dataset.objects.filter(name=name).first()
    if dataset is None:
        raise CommandError(f"No dataset named {name!r}")
    return dataset
