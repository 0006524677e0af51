"""Per-program counters with a latency sketch: bounded memory, percentiles within 0.5%.

The same :class:`ProgramCounters` shape serves three readers: the live per-process counters
updated on every request, the rows the writer keeps in the database (merged across workers), and
the dashboard's time buckets. Keeping one shape means one way to compute p50/p95/p99
(:class:`telemetry.sketches.LatencySketch`).

Process counters are only updated from the event loop thread (the request path and the ninja
error handlers run there), so they need no lock.
"""

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from telemetry.sketches import LatencySketch


@dataclass
class ModelUsage:
    """LM calls of one model within a program: dspy-cli's ``lm_call_breakdown`` entry."""

    call_count: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    attempt_count: int = 0  # upstream requests, retries included (programs/upstream.py)

    def as_dict(self) -> dict[str, Any]:
        return {
            "call_count": self.call_count,
            "total_attempts": self.attempt_count,
            "total_prompt_tokens": self.prompt_tokens,
            "total_completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "total_cost_usd": round(self.cost_usd, 8),
        }


@dataclass
class ProgramCounters:
    """Everything ``/api/metrics`` reports for one program."""

    program: str
    call_count: int = 0
    success_count: int = 0
    error_count: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    last_call_ts: float | None = None  # Unix time of the latest finished request
    latency: LatencySketch = field(default_factory=LatencySketch)
    models: dict[str, ModelUsage] = field(default_factory=dict)

    def record(
        self,
        *,
        success: bool,
        duration_ms: float | None,
        finished_at: float,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
        lm_calls: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        """Count one finished request. ``duration_ms`` is None when it was not measured."""
        self.call_count += 1
        if success:
            self.success_count += 1
        else:
            self.error_count += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.total_tokens += prompt_tokens + completion_tokens
        self.cost_usd += cost_usd
        if self.last_call_ts is None or finished_at > self.last_call_ts:
            self.last_call_ts = finished_at
        if duration_ms is not None:
            self.latency.observe(duration_ms)
        for call in lm_calls:
            usage = self.models.setdefault(call["model"], ModelUsage())
            usage.call_count += 1
            usage.prompt_tokens += call["prompt_tokens"]
            usage.completion_tokens += call["completion_tokens"]
            usage.cost_usd += call["cost_usd"] or 0.0
            usage.attempt_count += call.get("attempts", 1)

    def as_dict(self) -> dict[str, Any]:
        """dspy-cli's field names; counts, tokens and cost are numbers (0 is 0, never null)."""
        return {
            "program": self.program,
            "call_count": self.call_count,
            "success_count": self.success_count,
            "error_count": self.error_count,
            "error_rate": round(self.error_count / self.call_count, 4) if self.call_count else 0.0,
            "last_call_ts": _iso(self.last_call_ts),
            "avg_latency_ms": _round(self.latency.mean()),
            "p50_latency_ms": _round(self.latency.percentile(0.50)),
            "p95_latency_ms": _round(self.latency.percentile(0.95)),
            "p99_latency_ms": _round(self.latency.percentile(0.99)),
            "total_tokens": self.total_tokens,
            "total_prompt_tokens": self.prompt_tokens,
            "total_completion_tokens": self.completion_tokens,
            "total_cost_usd": round(self.cost_usd, 8),
            "lm_call_breakdown": {model: usage.as_dict() for model, usage in sorted(self.models.items())},
        }


class ProcessCounters:
    """This process's counters: a baseline read from the database at start-up plus every request since."""

    def __init__(self) -> None:
        self.programs: dict[str, ProgramCounters] = {}

    def get(self, program: str) -> ProgramCounters:
        counters = self.programs.get(program)
        if counters is None:
            counters = self.programs[program] = ProgramCounters(program)
        return counters

    def load(self, baseline: Iterable[ProgramCounters]) -> None:
        """Start from the database totals (once, at start-up), keeping what was counted before."""
        for stored in baseline:
            live = self.programs.get(stored.program)
            self.programs[stored.program] = merge(stored, live) if live else stored

    def reset(self) -> None:
        self.programs.clear()


def merge(a: ProgramCounters, b: ProgramCounters) -> ProgramCounters:
    """Sum of two counters of the same program (a new object)."""
    merged = ProgramCounters(a.program)
    for name in ("call_count", "success_count", "error_count", "prompt_tokens", "completion_tokens"):
        setattr(merged, name, getattr(a, name) + getattr(b, name))
    merged.total_tokens = a.total_tokens + b.total_tokens
    merged.cost_usd = a.cost_usd + b.cost_usd
    stamps = [ts for ts in (a.last_call_ts, b.last_call_ts) if ts is not None]
    merged.last_call_ts = max(stamps) if stamps else None
    merged.latency.merge(a.latency)
    merged.latency.merge(b.latency)
    for source in (a.models, b.models):
        for model, usage in source.items():
            target = merged.models.setdefault(model, ModelUsage())
            target.call_count += usage.call_count
            target.prompt_tokens += usage.prompt_tokens
            target.completion_tokens += usage.completion_tokens
            target.cost_usd += usage.cost_usd
            target.attempt_count += usage.attempt_count
    return merged


def _round(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 2)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, tz=UTC).isoformat()


PROCESS_COUNTERS = ProcessCounters()
