"""Background runs: ``POST /{P}/runs`` queues one program call; a worker runs it
(``source="run"``, in the key's quota, like a job's item), stores the answer ``GET /api/runs/{id}``
gives, and POSTs that same body to the run's ``webhook_url``, signed (:mod:`jobs.webhooks`).
"""

import json
from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from pydantic_core import to_json

from jobs import engine, keys
from jobs.addresses import AddressRefused, check_url
from jobs.models import Run, RunStatus
from jobs.runner import call_as
from jobs.worker import current_worker
from programs.runtime import get_runtime

SOURCE = "run"


class RunRefused(Exception):
    """400: the webhook_url cannot be used."""


def submit(program: str, version: str, inputs: dict[str, Any], webhook_url: str, caller: Any) -> Run:
    if webhook_url:
        try:
            check_url(webhook_url)
        except AddressRefused as exc:
            raise RunRefused(f"webhook_url: {exc}") from None
    with transaction.atomic():
        run = Run.objects.create(
            program=program,
            version=version,
            inputs=json.dumps(inputs),
            webhook_url=webhook_url,
            api_key_id=caller.key_id if caller is not None else None,
            api_key_name=caller.name if caller is not None else "",
        )
        engine.submit("run_background", str(run.id))
    return run


def _runs(key_id: int | None) -> QuerySet[Run]:
    runs = Run.objects.all()
    return runs if key_id is None else runs.filter(api_key_id=key_id)


def run_view(run_id: UUID, key_id: int | None) -> dict[str, Any] | None:
    run = _runs(key_id).filter(id=run_id).first()
    if run is None:
        return None
    if run.answer:
        return json.loads(run.answer)
    return {"run_id": str(run.id), "program": run.program, "status": run.status}


def run_background(run_id: str) -> None:
    """The engine's task body: the call, the stored answer, the webhook's first attempt."""
    claimed = Run.objects.filter(id=run_id, status=RunStatus.QUEUED).update(status=RunStatus.RUNNING)
    run = Run.objects.filter(id=run_id).first()
    if not claimed or run is None:
        return  # ran already (a run is not re-run after a kill: it stays "running")
    caller = keys.caller_for(run.api_key_id) if run.api_key_id is not None else None
    worker = current_worker()
    answer = worker.run(_answer(run, caller))
    status = RunStatus.SUCCEEDED if answer["status"] == 200 else RunStatus.FAILED
    with transaction.atomic():
        Run.objects.filter(id=run.id).update(
            status=status, answer=to_json(answer).decode(), finished_at=timezone.now()
        )
        if run.webhook_url:
            engine.submit("deliver_webhook", str(run.id), 1)


async def _answer(run: Run, caller: Any) -> dict[str, Any]:
    rid = f"run-{run.id.hex[:12]}"
    body: dict[str, Any] = {"run_id": str(run.id), "program": run.program}
    program = get_runtime().programs.get(run.program)
    if program is None:
        slot = {"ok": False, "status": 404, "error": f"Program '{run.program}' is not served by this worker"}
    else:
        inputs = json.loads(run.inputs)
        slot = json.loads(
            await call_as(caller, run.api_key_id, program, inputs, rid, str(run.id), run.version, SOURCE)
        )
    status = 200 if slot.get("ok") else int(slot.get("status", 500))
    body["status"] = "succeeded" if status == 200 else "failed"
    body["status_code"] = status
    if status == 200:
        body["outputs"] = slot["outputs"]
    else:
        body["error"] = {key: value for key, value in slot.items() if key not in ("ok", "status")}
    body["request_id"] = rid
    return body
