"""The ``programs.events`` subscribers of telemetry (registered once by ``TelemetryConfig.ready``):
every program call of the process, through whichever door, is recorded by
:func:`telemetry.services.inference_log_enqueue`; upstream retries and circuits are counted.
"""

from apikeys.context import current_caller
from programs import events
from programs.capture import capture_io
from programs.usage import UsageSnapshot
from telemetry import prometheus
from telemetry.records import InferenceRecord
from telemetry.services import captured_body, inference_log_enqueue


def on_request_started(started: events.RequestStarted) -> None:
    prometheus.IN_FLIGHT.labels(started.program).inc()


def on_request_finished(done: events.RequestFinished) -> None:
    """Record one finished program call, through whichever door it came (``programs.calls``)."""
    prometheus.IN_FLIGHT.labels(done.program).dec()
    capture = capture_io(done.program)
    record = InferenceRecord(
        program=done.program,
        model_alias=done.model_alias,
        model=done.model,
        request_id=done.request_id,
        status_code=done.status_code,
        finished_at=done.finished_at,
        duration_ms=done.duration_ms,
        usage=UsageSnapshot(done.prompt_tokens, done.completion_tokens, done.cost_usd, done.lm_calls),
        error_type=done.error_type,
        error_detail=done.error_detail,
        inputs=captured_body(done.inputs or b"") if capture else None,
        outputs=captured_body(done.outputs) if capture and done.outputs is not None else None,
        source=done.source,
        entry=done.entry,
        version=done.version,
        shadow=done.shadow,
    )
    if (caller := current_caller.get()) is not None:  # set by the API-key check (apikeys)
        record.api_key_id, record.api_key_name = caller.key_id, caller.name
    inference_log_enqueue(record)


def on_lm_retry(failed: events.LMRetry) -> None:
    prometheus.LM_ATTEMPTS.labels(failed.model_alias, "failed").inc()
    if failed.retrying:
        prometheus.LM_RETRIES.labels(failed.model_alias, failed.error_type).inc()


def on_circuit_changed(change: events.CircuitChanged) -> None:
    if change.state == "open":
        prometheus.CIRCUIT_OPENS.labels(change.model_alias).inc()


def subscribe_request_events() -> None:
    """Called once from ``TelemetryConfig.ready``: every program call of the process is recorded."""
    events.subscribe(events.request_started, on_request_started)
    events.subscribe(events.request_finished, on_request_finished)
    events.subscribe(events.lm_retry, on_lm_retry)
    events.subscribe(events.circuit_changed, on_circuit_changed)
