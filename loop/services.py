"""The loop's writes that a route makes: feedback on a call."""

from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction

from loop import prometheus
from loop.models import THUMBS, Feedback
from telemetry.selectors import inference_log_for_request


@dataclass(frozen=True)
class FeedbackGiven:
    feedback: Feedback
    created: bool


def feedback_give(
    request_id: str,
    *,
    api_key_id: int | None,
    author: str,
    own_key_id: int | None,
    name: str = THUMBS,
    score: float | None = None,
    value: str | None = None,
    comment: str = "",
    correction: dict[str, Any] | None = None,
) -> FeedbackGiven | None:
    """Create or update ``author``'s feedback ``name`` on a call; None when the call is unknown or
    not ``own_key_id``'s (None: anyone's may be judged). Program and version come from the call."""
    row = inference_log_for_request(request_id, own_key_id)
    if row is None:
        return None
    fields = {
        "program": row.program,
        "version": getattr(row, "version", ""),
        "api_key_id": api_key_id,
        "score": score,
        "value": value or "",
        "comment": comment,
        "correction": correction,
    }
    lookup = {"request_id": request_id, "name": name, "author": author}
    try:
        with transaction.atomic():
            feedback, created = Feedback.objects.update_or_create(**lookup, defaults=fields)
    except IntegrityError:  # a concurrent first one won the unique row: this one updates it
        feedback, created = Feedback.objects.update_or_create(**lookup, defaults=fields)
    prometheus.observe_feedback(feedback, created)
    return FeedbackGiven(feedback, created)
