"""The loop's ``programs.events`` subscriber: a captured call's LM calls go to the trace writer."""

from loop.lifecycle import trace_writer
from loop.traces import trace_record
from programs import events


def on_request_finished(done: events.RequestFinished) -> None:
    """Queue the call's trace (only captured calls carry ``lm_traces``; the rest cost one test)."""
    if done.lm_traces:
        trace_writer().enqueue(trace_record(done))  # type: ignore[arg-type]


def subscribe() -> None:
    """Called once from ``LoopConfig.ready``."""
    events.subscribe(events.request_finished, on_request_finished)
