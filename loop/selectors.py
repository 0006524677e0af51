"""The loop's reads: a call with its trace and feedback, feedback per program and version.

Calls are read through telemetry's selectors (the log row by request id); the trace and the
feedback are the loop's own tables, each on its request id index.
"""

from typing import Any

from django.db.models import Avg, Count

from loop.models import CallTrace, DatasetItem, Evaluation, EvaluationItem, Feedback
from telemetry.models import InferenceLog
from telemetry.selectors import inference_log_entry, inference_log_for_request


def call_detail(request_id: str, api_key_id: int | None) -> dict[str, Any] | None:
    """A call as ``GET /api/calls/{id}`` answers it; None when there is no such call, or it is not
    ``api_key_id``'s (None: anyone's). Three indexed queries."""
    row = inference_log_for_request(request_id, api_key_id)
    if row is None:
        return None
    trace = CallTrace.objects.filter(request_id=request_id).first()
    feedback = Feedback.objects.filter(request_id=request_id).order_by("name", "created_at")
    return call_body(row, trace, list(feedback))


def call_body(row: InferenceLog, trace: CallTrace | None, feedback: list[Feedback]) -> dict[str, Any]:
    entry = inference_log_entry(row)
    version = getattr(row, "version", "") or (trace.version if trace is not None else "")
    return {
        "request_id": row.request_id,
        "version": version,
        "program": row.program,
        "status": row.status_code,
        "success": row.success,
        "created_at": entry["timestamp"],
        "duration_ms": row.duration_ms,
        "source": row.source,
        "inputs": row.inputs,
        "outputs": row.outputs,
        "error": entry["error"],
        "error_type": entry["error_type"],
        "tokens": entry["tokens"],
        "cost_usd": row.cost_usd,
        "api_key": entry["api_key"],
        "traced": trace is not None,
        "lm_calls": trace.lm_calls if trace is not None else [],
        "feedback": [feedback_entry(item) for item in feedback],
    }


def feedback_entry(item: Feedback) -> dict[str, Any]:
    return {
        "name": item.name,
        "score": item.score,
        "value": item.value or None,
        "comment": item.comment,
        "correction": item.correction,
        "author": item.author,
        "created_at": item.created_at.isoformat(),
        "updated_at": item.updated_at.isoformat(),
    }


def feedback_summary(programs: list[str]) -> dict[str, dict[str, Any]]:
    """Per program: ``{"feedback": {name: {"count", "mean"}}, "feedback_by_version": {version:
    {name: {"count", "mean"}}}}`` (one GROUP BY on the (program, version, name) index). ``mean`` is
    of the scores (labels count, without a score); null when none has a score."""
    rows = (
        Feedback.objects.filter(program__in=programs)
        .values("program", "version", "name")
        .annotate(count=Count("id"), scored=Count("score"), mean=Avg("score"))
        .order_by()
    )
    summary: dict[str, dict[str, Any]] = {}
    for row in rows:
        program = summary.setdefault(row["program"], {"feedback": {}, "feedback_by_version": {}})
        total = program["feedback"].setdefault(row["name"], {"count": 0, "mean": None, "_sum": 0.0, "_n": 0})
        total["count"] += row["count"]
        if row["mean"] is not None:
            total["_sum"] += row["mean"] * row["scored"]
            total["_n"] += row["scored"]
        by_version = program["feedback_by_version"].setdefault(row["version"], {})
        by_version[row["name"]] = {"count": row["count"], "mean": _rounded(row["mean"])}
    for program in summary.values():
        for total in program["feedback"].values():
            scored, score_sum = total.pop("_n"), total.pop("_sum")
            total["mean"] = _rounded(score_sum / scored) if scored else None
    return summary


def feedback_metrics(programs: list[str]) -> dict[str, dict[str, Any]]:
    """``/api/metrics``'s feedback of every listed program (empty for those without any)."""
    summary = feedback_summary(programs)
    return {name: summary.get(name, {"feedback": {}, "feedback_by_version": {}}) for name in programs}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def evaluation_comparison(a: Evaluation, b: Evaluation) -> list[dict[str, Any]]:
    """Two evaluations of one dataset side by side: per item both outputs and both scores, the
    items whose score or outputs changed first (then dataset order). Two queries."""
    results = {
        (result.evaluation_id, result.item_id): result
        for result in EvaluationItem.objects.filter(evaluation__in=[a, b])
    }
    rows = []
    for item in DatasetItem.objects.filter(dataset=a.dataset_id).order_by("pk"):
        left, right = results.get((a.pk, item.pk)), results.get((b.pk, item.pk))
        row = {
            "inputs": item.inputs,
            "labels": item.labels,
            "a_outputs": left.outputs if left else None,
            "a_score": left.score if left else None,
            "b_outputs": right.outputs if right else None,
            "b_score": right.score if right else None,
        }
        row["changed"] = (row["a_score"], row["a_outputs"]) != (row["b_score"], row["b_outputs"])
        rows.append(row)
    return sorted(rows, key=lambda row: not row["changed"])  # stable: dataset order within each group
