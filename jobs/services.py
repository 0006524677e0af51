"""The jobs' writes and reads behind the API and ``manage.py jobs`` (sync: run them off the loop).

``key_id`` is whose jobs the caller may see: its own key's, or None for every job (an ``admin``
key, a staff session, or API keys off).
"""

import json
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from pydantic import ValidationError

from jobs import engine
from jobs.addresses import AddressRefused, check_url
from jobs.ingest import Submission, UploadRefused, create_job
from jobs.models import FINISHED, ItemState, Job, JobItem, JobResult, JobStatus, Run
from jobs.runner import finish_if_done, result_totals
from jobs.schemas import JobRequest
from programs.runtime import get_runtime

RESULTS_PAGE = 1000
FETCH_TIMEOUT_S = 30.0


class Conflict(Exception):
    """409: the job is not in a state for that."""


def submission(program: str, version: str, caller: Any) -> Submission:
    if program not in get_runtime().programs:
        raise UploadRefused(f"Program '{program}' not found. GET /programs lists them.", status=404)
    key_id = caller.key_id if caller is not None else None
    return Submission(program, version, key_id, caller.name if caller is not None else "")


def submit_lines(program: str, version: str, caller: Any, lines: Iterable[bytes]) -> Job:
    return create_job(submission(program, version, caller), lines)


def submit_from_url(body: bytes, caller: Any) -> Job:
    """``{"program", "version", "inputs_url"}``: the JSONL downloaded line by line into the items."""
    try:
        request = JobRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise UploadRefused(f"Invalid body: {where}: {first['msg']}") from None
    target = submission(request.program, request.version, caller)
    try:
        check_url(request.inputs_url)
    except AddressRefused as exc:
        raise UploadRefused(f"inputs_url: {exc}") from None
    try:
        with httpx.stream(
            "GET", request.inputs_url, timeout=FETCH_TIMEOUT_S, follow_redirects=False
        ) as answer:
            if answer.status_code != 200:
                raise UploadRefused(f"inputs_url answered {answer.status_code}")
            return create_job(target, _encoded(answer.iter_lines()))
    except httpx.HTTPError as exc:
        raise UploadRefused(f"inputs_url: {type(exc).__name__}: {exc}") from None


def _encoded(lines: Iterable[str]) -> Iterator[bytes]:
    for line in lines:
        yield line.encode()


def _jobs(key_id: int | None) -> QuerySet[Job]:
    jobs = Job.objects.all()
    return jobs if key_id is None else jobs.filter(api_key_id=key_id)


def visible(job_id: UUID, key_id: int | None) -> bool:
    return _jobs(key_id).filter(id=job_id).exists()


def job_view(job_id: UUID, key_id: int | None) -> dict[str, Any] | None:
    job = _jobs(key_id).filter(id=job_id).first()
    return as_view(job) if job is not None else None


def as_view(job: Job) -> dict[str, Any]:
    counts: dict[str, Any] = (
        {"succeeded": job.succeeded, "failed": job.failed, "tokens": job.tokens, "cost_usd": job.cost_usd}
        if job.status in FINISHED
        else result_totals(job.id)
    )
    done = counts["succeeded"] + counts["failed"]
    return {
        "id": str(job.id),
        "program": job.program,
        "version": job.version,
        "status": job.status,
        "total": job.total,
        **counts,
        "progress": round(done / job.total, 4) if job.total else 0.0,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "error": job.error,
    }


def job_list(key_id: int | None, limit: int) -> list[dict[str, Any]]:
    return [as_view(job) for job in _jobs(key_id).order_by("-created_at")[:limit]]


def results_page(job_id: UUID, after_line: int) -> list[tuple[int, str]]:
    rows = JobResult.objects.filter(job_id=job_id, line__gt=after_line).order_by("line")
    return list(rows.values_list("line", "body")[:RESULTS_PAGE])


def cancel(job_id: UUID, key_id: int | None) -> dict[str, Any] | None:
    """No item starts after this returns: the unstarted ones are cancelled in one update (an item
    starts only from ``leased``); the running ones finish and keep their results."""
    with transaction.atomic():
        job = _jobs(key_id).select_for_update().filter(id=job_id).first()
        if job is None:
            return None
        if job.status in FINISHED:
            raise Conflict(f"Job {job_id} is {job.status} already")
        JobItem.objects.filter(job=job, state__in=(ItemState.PENDING, ItemState.LEASED)).update(
            state=ItemState.CANCELLED, lease_owner="", lease_expires=None
        )
        Job.objects.filter(id=job.id).update(status=JobStatus.CANCELLING)
    finish_if_done(job.id)
    return job_view(job_id, key_id)


def retry(job_id: UUID, key_id: int | None) -> dict[str, Any] | None:
    """The failed items run again (their results are replaced); the job is running again."""
    with transaction.atomic():
        job = _jobs(key_id).select_for_update().filter(id=job_id).first()
        if job is None:
            return None
        if job.status not in FINISHED:
            raise Conflict(f"Job {job_id} is {job.status}: retry it once it has finished")
        failed = JobResult.objects.filter(job=job).exclude(status=200)
        chunks = sorted(set(failed.values_list("item__chunk", flat=True)))
        if not chunks:
            raise Conflict(f"Job {job_id} has no failed item")
        item_ids = list(failed.values_list("item_id", flat=True))
        failed.delete()
        JobItem.objects.filter(id__in=item_ids).update(
            state=ItemState.PENDING, lease_owner="", lease_expires=None
        )
        Job.objects.filter(id=job.id).update(status=JobStatus.RUNNING, finished_at=None)
        for chunk in chunks:
            engine.submit("run_chunk", str(job.id), chunk)
    return job_view(job_id, key_id)


def item_errors(job: Job, limit: int = 20) -> list[dict[str, Any]]:
    """The first failed items' result lines (the admin's per-item errors)."""
    rows = JobResult.objects.filter(job=job).exclude(status=200).order_by("line")[:limit]
    return [json.loads(body) for body in rows.values_list("body", flat=True)]


def prune(days: int | None = None) -> int:
    """Delete the jobs (items and results with them) and runs finished more than ``days`` ago
    (``JOBS_RETENTION_DAYS``), and the engine's finished tasks; returns how many jobs."""
    keep = settings.JOBS_RETENTION_DAYS if days is None else days
    cutoff = timezone.now() - timedelta(days=keep)
    old = Job.objects.filter(status__in=FINISHED, finished_at__lt=cutoff)
    count = old.count()
    old.delete()
    Run.objects.filter(finished_at__lt=cutoff).delete()
    engine.prune(cutoff)
    return count
