"""One chunk of a job, in a ``jobworker``: claim its items, run each through the one call path,
store each result exactly once.

* The chunk's pending items are leased to this worker in one update (owner + expiry, renewed by
  the heartbeat, :mod:`jobs.leases`). A lease that expires (its worker was killed) is swept back
  to pending and the chunk queued again, by any worker.
* An item starts only by its own conditional update (leased by me → running): a cancelled job's
  items are no longer leased, so no item starts after the cancel's answer.
* Its result is inserted in the transaction that marks it done, only if it is still this
  worker's: an item swept away from a slow worker and run again has one result, not two.
* Each item is a program call (:func:`programs.batch.run_item`: validate, call, map the failure,
  ``source="job"``, ``entry`` the job id, the job's version) inside the job's API key's quota
  (:func:`programs.reservations.quota_reserved`): logs, tokens, cost, quotas and budgets apply.
"""

import asyncio
import json
import logging
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q, Sum
from django.utils import timezone
from pydantic_core import to_json

from apikeys.context import Caller, current_caller
from jobs import keys, metrics, usage
from jobs.models import FINISHED, UNFINISHED, ItemState, Job, JobItem, JobResult, JobStatus
from jobs.worker import JobWorker, current_worker
from programs.batch import run_item
from programs.calls import report_rejected
from programs.program import Program
from programs.reservations import QuotaRefused, quota_reserved
from programs.runtime import get_runtime

logger = logging.getLogger(__name__)

Item = tuple[int, int, str, str]  # id, line, custom_id, raw


def run_chunk(job_id: str, chunk: int) -> None:
    """The engine's task body (sync, on the worker's main thread)."""
    worker = current_worker()
    job = Job.objects.filter(id=job_id).first()
    if job is None or job.status in FINISHED:
        return
    items = claim(job, chunk, worker.id)
    if items:
        Job.objects.filter(id=job.id, status=JobStatus.QUEUED).update(
            status=JobStatus.RUNNING, started_at=timezone.now()
        )
        worker.current = (str(job.id), chunk)
        try:
            worker.run(_run_items(worker, job, items))
        finally:
            worker.current = None
            release(job, chunk, worker.id)
    finish_if_done(job.id)


def claim(job: Job, chunk: int, owner: str) -> list[Item]:
    """Lease the chunk's pending items to ``owner``; returns those it holds now."""
    mine = JobItem.objects.filter(job=job, chunk=chunk)
    with transaction.atomic():
        mine.filter(state=ItemState.PENDING).update(
            state=ItemState.LEASED, lease_owner=owner, lease_expires=_lease_expiry()
        )
    rows = mine.filter(state=ItemState.LEASED, lease_owner=owner).order_by("line")
    return list(rows.values_list("id", "line", "custom_id", "raw"))


def release(job: Job, chunk: int, owner: str) -> None:
    """Items leased but not started (a draining worker's) back to pending, their chunk queued again."""
    from jobs import engine

    with transaction.atomic():
        released = JobItem.objects.filter(
            job=job, chunk=chunk, state=ItemState.LEASED, lease_owner=owner
        ).update(state=ItemState.PENDING, lease_owner="", lease_expires=None)
        if released:
            engine.submit("run_chunk", str(job.id), chunk)


def _lease_expiry() -> Any:
    return timezone.now() + timedelta(seconds=settings.JOBS_LEASE_S)


async def _run_items(worker: JobWorker, job: Job, items: list[Item]) -> None:
    program = get_runtime().programs.get(job.program)
    caller = await worker.db(keys.caller_for)(job.api_key_id) if job.api_key_id is not None else None
    gate = asyncio.Semaphore(min(worker.concurrency, program.limiter.limit if program else 1))

    async def one(item: Item) -> None:
        async with gate:
            if worker.draining or not await worker.db(_start)(item[0], worker.id):
                return
            started = time.perf_counter()
            line = await _item_line(program, job, caller, item)
            await worker.db(_store)(job, item, worker.id, *line)
            metrics.item_finished(job.program, line[0], time.perf_counter() - started)

    await asyncio.gather(*(one(item) for item in items))


def _start(item_id: int, owner: str) -> bool:
    """The item's own claim: leased by ``owner`` → running (False: cancelled or swept meanwhile)."""
    return bool(
        JobItem.objects.filter(id=item_id, state=ItemState.LEASED, lease_owner=owner).update(
            state=ItemState.RUNNING, attempts=F("attempts") + 1
        )
    )


async def _item_line(
    program: Program | None, job: Job, caller: Caller | None, item: Item
) -> tuple[int, bytes, usage.ItemUsage]:
    """Run one item; its status, its results line and what it spent."""
    _id, line, custom_id, raw = item
    rid = f"job-{job.id.hex[:12]}.{line}"
    slot = await _slot(program, job, caller, raw, rid)
    spent = usage.take(rid)
    answer = json.loads(slot)
    status = 200 if answer.get("ok") else int(answer.get("status", 500))
    body: dict[str, Any] = {"custom_id": custom_id or None, "status": status}
    if status == 200:
        body["outputs"] = answer["outputs"]
    else:
        body["error"] = {key: value for key, value in answer.items() if key not in ("ok", "status")}
    body["request_id"] = rid
    return status, to_json(body), spent


async def _slot(program: Program | None, job: Job, caller: Caller | None, raw: str, rid: str) -> bytes:
    """The item's batch slot (``{"ok": ...}``): the line checked, then the call in the key's quota."""
    if program is None:
        return _failure(404, f"Program '{job.program}' is not served by this worker", "ProgramNotFound")
    inputs, problem = _inputs(raw)
    if problem is not None:
        report_rejected(
            program, status=400, error_type="InvalidLine", detail=problem, inputs=raw.encode(),
            source=usage.SOURCE, entry=str(job.id), request_id=rid,
        )  # fmt: skip
        return _failure(400, problem, "InvalidLine")
    return await call_as(caller, job.api_key_id, program, inputs, rid, str(job.id), job.version, usage.SOURCE)


async def call_as(
    caller: Caller | None,
    key_id: int | None,
    program: Program,
    inputs: Any,
    rid: str,
    entry: str,
    version: str,
    source: str,
) -> bytes:
    """``inputs`` through :func:`programs.batch.run_item` as the key ``key_id`` (``caller``, None
    once revoked: 401) inside its quota; the batch slot (``{"ok": ...}``). Jobs' items and runs."""
    if key_id is not None and caller is None:
        return _failure(401, "The API key was revoked or expired", "Unauthorized")
    current_caller.set(caller)  # this task only: the log row names the key
    asked = version or None
    waited = 0.0
    while True:
        try:
            async with quota_reserved(caller):
                return await run_item(program, inputs, rid, source=source, entry=entry, version=asked)
        except QuotaRefused as refused:
            pause = _retry_after(refused)
            if refused.status != 429 or waited + pause > QUOTA_WAIT_S:
                return _failure(refused.status, refused.detail, "quota_exceeded")
        # Over the key's quota: the item waits for it (the job's items yield, they do not fail).
        await asyncio.sleep(pause)
        waited += pause


# How long an item waits in all for its key's quota (rpm, tokens per day...) before it records 429.
QUOTA_WAIT_S = 300.0


def _retry_after(refused: QuotaRefused) -> float:
    try:
        return max(float(refused.headers.get("Retry-After", "1")), 0.5)
    except ValueError:
        return 1.0


def _inputs(raw: str) -> tuple[Any, str | None]:
    """A line's ``inputs``, or why the line cannot run (400)."""
    try:
        value = json.loads(raw)
    except ValueError as exc:
        return None, f"Not a JSON line: {exc}"
    if not isinstance(value, dict) or "custom_id" not in value:
        return None, 'Each line must be a JSON object {"custom_id": "...", "inputs": {...}}'
    if not isinstance(value.get("inputs"), dict):
        return None, '"inputs" must be a JSON object of the program\'s inputs'
    return value["inputs"], None


def _failure(status: int, error: str, error_type: str) -> bytes:
    return to_json({"ok": False, "error": error, "status": status, "error_type": error_type})


def _store(job: Job, item: Item, owner: str, status: int, body: bytes, spent: usage.ItemUsage) -> None:
    """The item's result, once: only while the item is still this worker's running one."""
    item_id, line = item[0], item[1]
    try:
        with transaction.atomic():
            mine = JobItem.objects.filter(id=item_id, state=ItemState.RUNNING, lease_owner=owner)
            if not mine.update(state=ItemState.DONE, lease_expires=None):
                return  # swept meanwhile: whoever runs it now stores it
            JobResult.objects.create(
                item_id=item_id, job=job, line=line, status=status, tokens=spent.tokens,
                cost_usd=spent.cost_usd, body=body.decode(),
            )  # fmt: skip
    except IntegrityError:
        logger.warning("job %s line %s: a result exists already; this run's is dropped", job.id, line)


def finish_if_done(job_id: Any) -> None:
    """Completed (or cancelled) once no item is left to run, with its totals."""
    if JobItem.objects.filter(job_id=job_id, state__in=UNFINISHED).exists():
        return
    totals = result_totals(job_id)
    now = timezone.now()
    Job.objects.filter(id=job_id, status=JobStatus.CANCELLING).update(
        status=JobStatus.CANCELLED, finished_at=now, **totals
    )
    Job.objects.filter(id=job_id, status__in=(JobStatus.QUEUED, JobStatus.RUNNING)).update(
        status=JobStatus.COMPLETED, finished_at=now, **totals
    )


def result_totals(job_id: Any) -> dict[str, Any]:
    """succeeded, failed, tokens and cost_usd of a job's results so far."""
    totals = JobResult.objects.filter(job_id=job_id).aggregate(
        succeeded=Count("id", filter=Q(status=200)),
        failed=Count("id", filter=~Q(status=200)),
        tokens=Sum("tokens"),
        cost_usd=Sum("cost_usd"),
    )
    return {**totals, "tokens": totals["tokens"] or 0, "cost_usd": totals["cost_usd"] or 0.0}
