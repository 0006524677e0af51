"""``manage.py seed_feedback --fraction F``: thumbs on a share of the logged calls (load-test kit).

Gives the admin's feedback filters (score, "has a correction") a realistic table to be measured on
next to ``seed_inference_logs`` (``loadtest/logs_at_scale.py``). Every ``1/F``-th call by id gets a
thumbs score from author ``seed``; a share of the thumbs-down carry a correction. Run it once per
seed: a second run finds the rows it wrote and adds nothing.
"""

import random
import time
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Mod

from loop.models import THUMBS, Feedback
from telemetry.models import InferenceLog

AUTHOR = "seed"
CHUNK = 5_000


class Command(BaseCommand):
    help = "Add thumbs feedback (some with corrections) to a share of the logged calls. For measurements."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--fraction", type=float, default=0.01, help="share of the calls (0.01)")
        parser.add_argument("--down", type=float, default=0.3, help="share of the thumbs that are 0 (0.3)")
        parser.add_argument(
            "--corrected", type=float, default=0.66, help="share of the thumbs-down with a correction (0.66)"
        )
        parser.add_argument("--seed", type=int, default=1, help="random seed")

    def handle(self, *args: Any, **options: Any) -> None:
        fraction = options["fraction"]
        if not 0 < fraction <= 1:
            raise CommandError("--fraction must be in (0, 1]")
        rng = random.Random(options["seed"])  # noqa: S311 - plausible data, not secrets
        started = time.perf_counter()
        calls = (
            InferenceLog.objects.annotate(slot=Mod(F("id"), round(1 / fraction)))
            .filter(slot=0)
            .exclude(request_id__in=Feedback.objects.filter(author=AUTHOR).values("request_id"))
            .values_list("request_id", "program", "version", "api_key_id", "outputs")
        )
        written = corrected = 0
        batch: list[Feedback] = []
        for request_id, program, version, key_id, outputs in calls.iterator(chunk_size=CHUNK):
            down = rng.random() < options["down"]
            correction = None
            if down and rng.random() < options["corrected"]:
                answer = outputs.get("answer", "") if isinstance(outputs, dict) else ""
                correction = {"answer": f"corrected: {answer}"}
                corrected += 1
            batch.append(Feedback(
                request_id=request_id, name=THUMBS, author=AUTHOR, api_key_id=key_id, program=program,
                version=version, score=0.0 if down else 1.0, correction=correction,
            ))  # fmt: skip
            if len(batch) >= CHUNK:
                written += _write(batch)
        written += _write(batch)
        self.stdout.write(
            f"Seeded {written:,} feedback row(s), {corrected:,} with a correction, "
            f"in {time.perf_counter() - started:.1f} s."
        )


def _write(batch: list[Feedback]) -> int:
    with transaction.atomic():
        Feedback.objects.bulk_create(batch)
    count = len(batch)
    batch.clear()
    return count
