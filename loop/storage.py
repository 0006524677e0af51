"""The loop's writes on the trace writer's thread: a batch of call traces in one statement."""

from collections.abc import Sequence

from loop.traces import TraceRecord, trace_row


def call_traces_write(records: Sequence[TraceRecord]) -> None:
    """Insert a batch of traces. A request id already stored (a retried batch) is skipped."""
    from loop.models import CallTrace

    rows = [CallTrace(**trace_row(record)) for record in records]
    CallTrace.objects.bulk_create(rows, ignore_conflicts=True)
