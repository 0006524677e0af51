"""``manage.py jobs submit|status|results|cancel|prune``: the jobs from a shell (docs/JOBS.md).

The same services as ``/api/jobs``, as an ``admin`` would see them (every job): no server needed,
only the database; workers run what ``submit`` queues.
"""

import json
import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import Any
from uuid import UUID

from django.core.management.base import BaseCommand, CommandError

from jobs import services
from jobs.ingest import UploadRefused


class Command(BaseCommand):
    help = "Submit a JSONL file as a job, read a job's status or results, cancel it, prune old jobs"

    def add_arguments(self, parser: ArgumentParser) -> None:
        verbs = parser.add_subparsers(dest="verb", required=True)
        submit = verbs.add_parser("submit", help="queue FILE (JSONL, '-' for stdin) for PROGRAM")
        submit.add_argument("program")
        submit.add_argument("file")
        submit.add_argument("--version", default="")
        for verb in ("status", "results", "cancel"):
            verbs.add_parser(verb).add_argument("job_id", type=UUID)
        verbs.add_parser("prune", help="delete finished jobs older than JOBS_RETENTION_DAYS")

    def handle(self, *, verb: str, **options: Any) -> None:
        if verb == "submit":
            self._submit(options["program"], options["file"], options["version"])
        elif verb == "prune":
            self.stdout.write(f"{services.prune()} job(s) pruned")
        elif verb == "results":
            after = 0
            while page := services.results_page(options["job_id"], after):
                self.stdout.write("".join(body + "\n" for _line, body in page), ending="")
                after = page[-1][0]
        else:
            action = services.job_view if verb == "status" else services.cancel
            try:
                view = action(options["job_id"], None)
            except services.Conflict as exc:
                raise CommandError(str(exc)) from None
            if view is None:
                raise CommandError(f"Job {options['job_id']} not found")
            self.stdout.write(json.dumps(view, indent=2))

    def _submit(self, program: str, file: str, version: str) -> None:
        try:
            if file == "-":
                job = services.submit_lines(program, version, None, sys.stdin.buffer)
            else:
                with Path(file).open("rb") as lines:
                    job = services.submit_lines(program, version, None, lines)
        except (UploadRefused, OSError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(json.dumps({"id": str(job.id), "status": job.status, "total": job.total}))
