"""Each job item's tokens and cost, as the call path reports them (``request_finished``).

:func:`programs.batch.run_item` answers the item's outputs only; what the call spent is on its
``request_finished`` event, so the worker keeps the events of ``source="job"`` calls by request id
until the item's result is stored (:func:`take`).
"""

from dataclasses import dataclass

from programs import events

SOURCE = "job"


@dataclass(frozen=True, slots=True)
class ItemUsage:
    tokens: int = 0
    cost_usd: float = 0.0


_spent: dict[str, ItemUsage] = {}


def on_request_finished(call: events.RequestFinished) -> None:
    if call.source == SOURCE:
        _spent[call.request_id] = ItemUsage(call.prompt_tokens + call.completion_tokens, call.cost_usd or 0.0)


def take(request_id: str) -> ItemUsage:
    """The usage of the finished call ``request_id`` (zero if it made no call), forgotten after."""
    return _spent.pop(request_id, ItemUsage())


def subscribe_job_usage() -> None:
    events.subscribe(events.request_finished, on_request_finished)
