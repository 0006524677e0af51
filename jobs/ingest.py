"""A job's upload, line by line into the items table: never whole in memory.

The JSONL body (or the ``inputs_url`` download) is read one line at a time and written 500
items per insert, in one transaction with the job and its chunk tasks: a refused upload (a
duplicate ``custom_id``, too many lines) leaves nothing behind. A line that is not JSON, or has no
``custom_id``, is kept as it is: it fails alone when the worker reaches it (its error in the results).
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from jobs import engine
from jobs.models import Job, JobItem

BATCH = 500  # items per insert (and per custom_id look-up: under SQLite's variable limit)
MAX_CUSTOM_ID = 200


class UploadRefused(Exception):
    """Answered as ``status`` (400: the upload, naming the line; 404: no such program)."""

    def __init__(self, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.status = status


@dataclass(frozen=True, slots=True)
class Submission:
    program: str
    version: str
    api_key_id: int | None
    api_key_name: str


def create_job(submission: Submission, lines: Iterable[bytes]) -> Job:
    """The job with one item per non-blank line, its chunks queued. Raises :class:`UploadRefused`."""
    chunk_size = settings.JOBS_CHUNK_SIZE
    with transaction.atomic():
        job = Job.objects.create(
            program=submission.program,
            version=submission.version,
            api_key_id=submission.api_key_id,
            api_key_name=submission.api_key_name,
        )
        total = 0
        batch: list[JobItem] = []
        for number, line in enumerate(lines, 1):
            raw = line.strip()
            if not raw:
                continue
            if total >= settings.JOBS_MAX_LINES:
                raise UploadRefused(
                    f"line {number}: more than {settings.JOBS_MAX_LINES} lines (JOBS_MAX_LINES)"
                )
            text = raw.decode("utf-8", errors="replace")
            item = JobItem(job=job, line=number, custom_id=_custom_id(text, number), raw=text)
            item.chunk = total // chunk_size
            batch.append(item)
            total += 1
            if len(batch) >= BATCH:
                _insert(job, batch)
                batch = []
        _insert(job, batch)
        if total == 0:
            raise UploadRefused("no input lines: send one JSON object per line")
        job.total = total
        job.chunks = (total + chunk_size - 1) // chunk_size
        job.save(update_fields=["total", "chunks"])
        for chunk in range(job.chunks):
            engine.submit("run_chunk", str(job.id), chunk)
    return job


def _custom_id(text: str, number: int) -> str:
    """The line's ``custom_id`` ('' when the line is not a JSON object with one: it fails alone)."""
    try:
        value = json.loads(text)
    except ValueError:
        return ""
    custom_id = value.get("custom_id") if isinstance(value, dict) else None
    if custom_id is None:
        return ""
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
        raise UploadRefused(
            f"line {number}: custom_id must be a non-empty string of at most {MAX_CUSTOM_ID} characters"
        )
    return custom_id


def _insert(job: Job, batch: list[JobItem]) -> None:
    """Insert ``batch``, refusing a custom_id seen on an earlier line (of this batch or before)."""
    first: dict[str, int] = {}
    for item in batch:
        if item.custom_id:
            if item.custom_id in first:
                raise _duplicate(item, first[item.custom_id])
            first[item.custom_id] = item.line
    earlier = dict(
        JobItem.objects.filter(job=job, custom_id__in=list(first)).values_list("custom_id", "line")
    )
    for item in batch:
        if item.custom_id in earlier:
            raise _duplicate(item, earlier[item.custom_id])
    JobItem.objects.bulk_create(batch)


def _duplicate(item: JobItem, first_line: int) -> UploadRefused:
    return UploadRefused(
        f"line {item.line}: duplicate custom_id {item.custom_id!r} (first on line {first_line})"
    )
