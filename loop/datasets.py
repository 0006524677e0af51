"""Datasets: examples for a program, from its calls (inputs; labels = the correction, else the
outputs) or given as they are, exported and imported as JSONL, one example a line::

    {"inputs": {...}, "labels": {...}, "request_id": "..." | null, "feedback": {...}}

A line loads as ``dspy.Example(**inputs, **labels).with_inputs(*inputs)`` (:func:`as_example`).
"""

import json
from collections.abc import Iterable, Iterator
from typing import Any

from django.db import transaction

from loop.models import Dataset, DatasetItem, Feedback
from telemetry.selectors import inference_logs_for_requests

EXPORT_CHUNK = 500  # rows read per query while streaming an export


class DatasetError(ValueError):
    """Bad input for a dataset (a 422 at the API, an error line at the command)."""


def items_from_calls(dataset: Dataset, request_ids: list[str]) -> tuple[int, list[str]]:
    """Add one item per call of the dataset's program; returns (added, the request ids skipped:
    unknown, another program's, or without captured inputs)."""
    rows = inference_logs_for_requests(request_ids)
    feedback = _feedback_by_request(request_ids)
    items, skipped = [], []
    for request_id in dict.fromkeys(request_ids):  # in order, once each
        row = rows.get(request_id)
        if row is None or row.program != dataset.program or not _captured(row.inputs):
            skipped.append(request_id)
            continue
        given = feedback.get(request_id, [])
        labels = _correction(given) or (row.outputs if _captured(row.outputs) else {})
        items.append(
            DatasetItem(
                dataset=dataset,
                inputs=row.inputs,
                labels=labels,
                request_id=request_id,
                feedback={item.name: _feedback_summary(item) for item in given},
            )
        )
    DatasetItem.objects.bulk_create(items)
    return len(items), skipped


def items_from_examples(dataset: Dataset, examples: Iterable[dict[str, Any]]) -> int:
    """Add examples given as ``{"inputs", "labels", "request_id"?, "feedback"?}`` (an export's lines)."""
    items = [
        DatasetItem(
            dataset=dataset,
            inputs=_object(example, "inputs", required=True),
            labels=_object(example, "labels"),
            request_id=str(example.get("request_id") or ""),
            feedback=_object(example, "feedback"),
        )
        for example in examples
    ]
    with transaction.atomic():
        DatasetItem.objects.bulk_create(items)
    return len(items)


def import_lines(dataset: Dataset, lines: Iterable[str]) -> int:
    """Add the examples of a JSONL export (blank lines skipped); all or nothing."""
    examples = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"line {number}: not JSON ({exc.msg})") from exc
        if not isinstance(example, dict):
            raise DatasetError(f"line {number}: not a JSON object")
        examples.append(example)
    try:
        return items_from_examples(dataset, examples)
    except DatasetError as exc:
        raise DatasetError(f"an example: {exc}") from exc


def export_lines(dataset: Dataset) -> Iterator[str]:
    """The dataset as JSONL, one example a line, read in chunks (a large dataset is never in memory)."""
    last = 0
    while chunk := items_after(dataset, last):
        yield from (line_text(item) for item in chunk)
        last = chunk[-1].pk


def items_after(dataset: Dataset, last: int) -> list[DatasetItem]:
    """The next chunk of items after primary key ``last``, in order (keyset: no OFFSET)."""
    return list(DatasetItem.objects.filter(dataset=dataset, pk__gt=last).order_by("pk")[:EXPORT_CHUNK])


def line_text(item: DatasetItem) -> str:
    return json.dumps(item_line(item), ensure_ascii=False) + "\n"


def item_line(item: DatasetItem) -> dict[str, Any]:
    return {
        "inputs": item.inputs,
        "labels": item.labels,
        "request_id": item.request_id or None,
        "feedback": item.feedback,
    }


def as_example(line: dict[str, Any]) -> Any:
    """A line as DSPy's example: inputs and labels as fields, the inputs marked as inputs."""
    import dspy

    return dspy.Example(**line["inputs"], **line["labels"]).with_inputs(*line["inputs"])


def _feedback_by_request(request_ids: list[str]) -> dict[str, list[Feedback]]:
    by_request: dict[str, list[Feedback]] = {}
    for item in Feedback.objects.filter(request_id__in=request_ids).order_by("updated_at", "id"):
        by_request.setdefault(item.request_id, []).append(item)
    return by_request


def _correction(feedback: list[Feedback]) -> dict[str, Any] | None:
    """The newest correction given on the call, if any."""
    corrections = [item.correction for item in feedback if item.correction]
    return corrections[-1] if corrections else None


def _feedback_summary(item: Feedback) -> dict[str, Any]:
    return {
        "score": item.score,
        "value": item.value or None,
        "comment": item.comment,
        "correction": item.correction,
    }


def _captured(value: Any) -> bool:
    """A captured JSON object (not capture off, nor a body the log kept only the size or text of)."""
    return isinstance(value, dict) and "_truncated" not in value and "_unparsed" not in value


def _object(example: dict[str, Any], key: str, *, required: bool = False) -> dict[str, Any]:
    value = example.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict) or (required and not value):
        raise DatasetError(f"`{key}` must be a JSON object{' of input fields' if required else ''}")
    return value
