"""The bodies of the telemetry routes, as the OpenAPI document states them (dspy-cli's field names).

The routes build their answers from dicts (``ProgramCounters.as_dict``, ``inference_log_entry``,
``live.batch_event``); these models only describe them, and the contract test
(tests/e2e/test_openapi_conformance.py) checks that the two agree.
"""

from typing import Any, Literal

from pydantic import BaseModel, Field

_PERCENTILE = (
    "ms, from a DDSketch merged over every worker: within 0.5% of the timed request of rank "
    "floor({q} x (n - 1)) in sorted order (before rounding to 0.01 ms); null: no timed request"
)


class ModelUsage(BaseModel):
    call_count: int
    total_attempts: int = Field(description="upstream requests for these calls, retries included")
    total_prompt_tokens: int
    total_completion_tokens: int
    total_tokens: int
    total_cost_usd: float


class ProgramMetrics(BaseModel):
    program: str
    call_count: int
    success_count: int
    error_count: int
    error_rate: float
    last_call_ts: str | None = Field(description="ISO 8601 time of the latest finished request")
    avg_latency_ms: float | None = Field(description="exact mean of the timed requests; null: none")
    p50_latency_ms: float | None = Field(description=_PERCENTILE.format(q="0.50"))
    p95_latency_ms: float | None = Field(description=_PERCENTILE.format(q="0.95"))
    p99_latency_ms: float | None = Field(description=_PERCENTILE.format(q="0.99"))
    total_tokens: int
    total_prompt_tokens: int
    total_completion_tokens: int
    total_cost_usd: float
    lm_call_breakdown: dict[str, ModelUsage] = Field(description="per model")
    # Added by the loop app (docs/LOOP.md) with scope=all; absent with scope=process.
    feedback: dict[str, "FeedbackStat"] | None = Field(None, description="per feedback name, all versions")
    feedback_by_version: dict[str, dict[str, "FeedbackStat"]] | None = Field(
        None, description='per version ("": unversioned calls), per feedback name'
    )


class FeedbackStat(BaseModel):
    count: int
    mean: float | None = Field(description="mean of the scores given; null: labels only")


class WriterStatus(BaseModel):
    """The answering process's telemetry writer: what is waiting, written, dropped."""

    queue_depth: int
    queued_bytes: int = Field(
        description="memory the waiting records hold (bounded by TELEMETRY_QUEUE_MAX_BYTES)"
    )
    written: int
    dropped: int
    write_errors: int
    flush_interval_s: float
    writer_running: bool


class Spend(BaseModel):
    request_count: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float = Field(description="estimated, from the models' prices (0 for unpriced models)")


class KeySpend(BaseModel):
    """One API key's use (UTC days), from the per-key daily aggregates."""

    api_key_id: int
    name: str
    today: Spend
    month: Spend


class VersionMetrics(ProgramMetrics):
    """One version of a program: the program totals' fields, over the calls that version ran."""

    version: str
    aliases: list[str] = Field(description="the aliases that answer with this version (not as a shadow)")
    shadow_count: int = Field(description="of call_count, the shadow runs")


class MetricsListing(BaseModel):
    programs: list[ProgramMetrics]
    versions: list[VersionMetrics] | None = Field(
        default=None, description="with `by=version`: one entry per program and version that was called"
    )
    scope: Literal["all", "process"]
    telemetry: WriterStatus
    api_keys: list[KeySpend] = Field(
        default_factory=list, description="keys used this month (scope all; empty with scope process)"
    )


class MetricsDetail(BaseModel):
    metrics: ProgramMetrics
    scope: Literal["all", "process"]
    versions: list[VersionMetrics] = Field(description="each version that was called, oldest first")


class Tokens(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class LogEntry(BaseModel):
    timestamp: str
    program: str
    model: str
    model_alias: str
    request_id: str
    trace_id: str | None = Field(description="the request's OpenTelemetry trace id; null: not traced")
    status_code: int
    success: bool
    duration_ms: float | None = Field(description="null: refused before the program ran")
    inputs: Any
    outputs: Any
    error: str | None
    error_type: str | None
    tokens: Tokens
    cost_usd: float | None = Field(description="null: no price known for the model")
    lm_calls: list[dict[str, Any]]
    answered_by: str | None = Field(description="the model alias that answered (a fallback's when one did)")
    attempts: int = Field(description="upstream requests of the LM calls, retries included")
    worker: str
    api_key: str | None
    version: str | None = Field(description="the program version that ran the call; null: unversioned")
    shadow: bool = Field(description="a shadow run: a sampled copy of a call, off the answer's path")


class LogListing(BaseModel):
    logs: list[LogEntry]
    count: int
    next: str | None = Field(description="pass as `before` for the next (older) page; null on the last page")


class ProgramTotals(BaseModel):
    calls: int
    errors: int
    tokens: int


class BatchEvent(BaseModel):
    """``event: batch``: the per-program totals of one batch the telemetry writer committed."""

    type: Literal["telemetry.batch"]
    worker: str
    ts: float
    programs: dict[str, ProgramTotals]
