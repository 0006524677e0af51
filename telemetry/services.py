"""Telemetry's request-path writes: a finished (or refused) program call becomes one record, counted
at once (the process's counters, Prometheus) and queued for the writer thread
(:mod:`telemetry.lifecycle`). No ORM, no file I/O, no JSON on the loop: ~21 µs per request.

The rest of telemetry, by job: :mod:`telemetry.subscribers` (the ``programs.events`` subscribers
that call these), :mod:`telemetry.lifecycle` (the writer's start, flush and stop),
:mod:`telemetry.aggregation` (a batch's counters, pure), :mod:`telemetry.storage` (the batch's
rows and aggregates in the database, pruning); reads are in :mod:`telemetry.selectors`.
"""

from typing import Any

from django.conf import settings

from programs.usage import UsageSnapshot
from telemetry import prometheus, tracing
from telemetry import records as telemetry_records
from telemetry.aggregation import count
from telemetry.counters import PROCESS_COUNTERS
from telemetry.lifecycle import telemetry_writer
from telemetry.records import Body, InferenceRecord


def inference_log_enqueue(record: InferenceRecord) -> bool:
    """Count a finished request at once (counters, Prometheus) and queue it for the database."""
    record.worker = telemetry_records.WORKER
    record.trace_id = tracing.current_trace_id()  # the program's (or server's) span is still current
    count(PROCESS_COUNTERS.get(record.program), record)
    _observe(record, record.usage)
    return telemetry_writer().enqueue(record)


def _observe_attempts(record: InferenceRecord, call: dict[str, Any]) -> None:
    """The request that answered an LM call (the failed ones are counted by :func:`on_lm_retry`)."""
    alias = call.get("model_alias") or ""
    if not alias or call.get("cache_hit"):  # an LM the program built, no model answered, the cache
        return
    prometheus.LM_ATTEMPTS.labels(alias, "ok").inc()
    if alias != record.model_alias:
        prometheus.LM_FALLBACKS.labels(record.program, alias).inc()


def _observe(record: InferenceRecord, usage: UsageSnapshot) -> None:
    program = record.program
    prometheus.REQUESTS.labels(program, prometheus.outcome(record.status_code), record.version).inc()
    reason = prometheus.rejection_reason(record.status_code)
    if reason is not None:
        prometheus.REJECTED.labels(program, reason).inc()
    if record.duration_ms is not None:
        prometheus.LATENCY.labels(program, record.version).observe(record.duration_ms / 1000)
    for call in usage.lm_calls:
        model = call["model"]
        prometheus.LM_CALLS.labels(model).inc()
        _observe_attempts(record, call)
        if call["prompt_tokens"]:
            prometheus.TOKENS.labels(model, "prompt").inc(call["prompt_tokens"])
        if call["completion_tokens"]:
            prometheus.TOKENS.labels(model, "completion").inc(call["completion_tokens"])
        if call["cost_usd"]:
            prometheus.COST.labels(model).inc(call["cost_usd"])


def captured_body(body: bytes) -> Body:
    size = len(body)
    return Body(body if size <= settings.TELEMETRY_MAX_CAPTURE_BYTES else None, size)
