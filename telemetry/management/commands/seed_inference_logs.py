"""``manage.py seed_inference_logs --rows N --days D``: a production-sized log to measure (load-test kit)."""

import time
from argparse import ArgumentParser
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from telemetry.seeding import DEFAULT_PROGRAMS, Seeder


class Command(BaseCommand):
    help = (
        "Write N realistic inference log rows spread over the last D days (COPY on PostgreSQL), and "
        "add them to the per-program and per-model aggregates. For measurements, not production."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--rows", type=int, required=True, help="how many rows, e.g. 10000000")
        parser.add_argument("--days", type=float, default=30.0, help="spread over the last D days (30)")
        parser.add_argument(
            "--programs", nargs="+", default=list(DEFAULT_PROGRAMS),
            help=f"program names (default: the load-test fixture's, {' '.join(DEFAULT_PROGRAMS)})",
        )  # fmt: skip
        parser.add_argument("--seed", type=int, default=1, help="random seed (same seed, same rows)")

    def handle(self, *args: Any, **options: Any) -> None:
        rows, days = options["rows"], options["days"]
        if rows < 0 or days <= 0:
            raise CommandError("--rows must be >= 0 and --days > 0")
        seeder = Seeder(options["programs"], rows, days, datetime.now(tz=UTC), options["seed"])
        started = time.perf_counter()
        step = max(rows // 20, 1)
        shown = [0]

        def progress(done: int) -> None:
            if done - shown[0] >= step and options["verbosity"] >= 1:
                shown[0] = done
                elapsed = time.perf_counter() - started
                self.stdout.write(f"  {done:,} rows, {elapsed:.0f} s ({done / elapsed:,.0f} rows/s)")

        result = seeder.run(progress)
        elapsed = time.perf_counter() - started
        programs = ", ".join(f"{name} {count:,}" for name, count in sorted(result.per_program.items()))
        self.stdout.write(
            f"Seeded {result.rows:,} inference log row(s) from {result.first:%Y-%m-%d %H:%M} to "
            f"{result.last:%Y-%m-%d %H:%M} UTC ({programs}) and {result.buckets:,} aggregate bucket(s) "
            f"in {elapsed:.1f} s ({result.rows / max(elapsed, 1e-9):,.0f} rows/s)."
        )
