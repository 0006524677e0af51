"""``manage.py prune_inference_logs --older-than 30d``: retention for the inference log."""

import re
from argparse import ArgumentParser
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from telemetry.storage import inference_logs_prune

_AGE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``2w``... (s, m, h, d, w)."""
    match = _AGE.match(text.strip())
    if not match:
        raise CommandError(f"--older-than {text!r}: use a number and a unit, e.g. 30d, 12h, 2w")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


class Command(BaseCommand):
    help = (
        "Delete inference log rows older than the given age (and the dashboard's minute buckets past "
        "their window). Per-program totals and hourly stats are kept."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--older-than", required=True, help="age such as 30d, 12h, 2w")
        parser.add_argument(
            "--chunk", type=int, default=10_000, help="rows deleted per transaction (10000): shorter locks"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        age = parse_age(options["older_than"])
        if options["chunk"] < 1:
            raise CommandError("--chunk must be at least 1")
        deleted = inference_logs_prune(age, chunk=options["chunk"])
        self.stdout.write(
            f"Deleted {deleted['logs']} inference log row(s) older than {options['older_than']} "
            f"in {deleted['chunks']} chunk(s) (longest {deleted['longest_chunk_ms']} ms) "
            f"and {deleted['buckets']} expired dashboard bucket(s)."
        )
