"""Prometheus metrics for ``GET /metrics``, correct with one process or several gunicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``dspysite/gunicorn.conf.py`` sets it and cleans it when
gunicorn starts; ``child_exit`` marks dead workers), every worker writes its values to files in
that directory and the worker answering ``/metrics`` sums them. Unset, the default in-process
registry is used. The variable must be set before this module is imported.

django-prometheus's series (``django_db_*`` from its database backends, ``django_model_*``,
``django_migrations_*``, ``django_http_*`` from its middleware on the browser paths) live in the
same registry, so the one exposition carries them, summed across workers like ours.
"""

import os
from typing import Generic, TypeVar

from django_prometheus import migrations as django_migrations
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

disable_created_metrics()  # no *_created series: the same exposition with one process or several

M = TypeVar("M", Counter, Gauge, Histogram)


class Labelled(Generic[M]):
    """A labelled metric whose children are looked up once: ``labels()`` costs ~3 us, a dict ~0.05 us.

    The request path touches several labelled metrics per request; caching keeps that cheap. The
    cache is as small as the label sets (programs x outcomes, models x types).
    """

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def labels(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


# Seconds, 5 ms to 120 s: a cached or tiny-model answer takes milliseconds, a long generation
# minutes. Exact percentiles are /api/metrics' (a DDSketch); these buckets are for PromQL's
# histogram_quantile and SLO ratios (e.g. le="2.5"), at most 2.5x apart.
LATENCY_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, float("inf"),
)  # fmt: skip

REQUESTS = Labelled(
    Counter("dspy_requests_total", "Finished program requests by outcome", ["program", "outcome", "version"])
)
LATENCY = Labelled(
    Histogram(
        "dspy_request_duration_seconds",
        "Program request latency",
        ["program", "version"],
        buckets=LATENCY_BUCKETS_S,
    )
)
IN_FLIGHT = Labelled(
    Gauge(
        "dspy_requests_in_flight", "Program requests being answered", ["program"], multiprocess_mode="livesum"
    )
)
REJECTED = Labelled(
    Counter("dspy_requests_rejected_total", "Program requests refused before running", ["program", "reason"])
)
TOKENS = Labelled(Counter("dspy_lm_tokens_total", "LM tokens by model and type", ["model", "type"]))
LM_CALLS = Labelled(Counter("dspy_lm_calls_total", "LM calls by model", ["model"]))
COST = Labelled(
    Counter("dspy_lm_cost_usd_total", "Estimated LM cost in USD by model (priced calls only)", ["model"])
)
# programs/upstream.py: every upstream request, the failed ones retried, the LM calls a fallback
# answered, and the circuit breakers that opened (in this process's view), by model alias.
LM_ATTEMPTS = Labelled(
    Counter("dspy_lm_attempts_total", "Upstream LM requests (ok, failed)", ["model_alias", "outcome"])
)
LM_RETRIES = Labelled(
    Counter("dspy_lm_retries_total", "Failed upstream LM requests retried", ["model_alias", "error"])
)
LM_FALLBACKS = Labelled(
    Counter("dspy_lm_fallbacks_total", "LM calls answered by a fallback model", ["program", "model_alias"])
)
CIRCUIT_OPENS = Labelled(
    Counter("dspy_lm_circuit_opens_total", "Model circuit breakers opened", ["model_alias"])
)
TELEMETRY_QUEUE_DEPTH = Gauge(
    "dspy_telemetry_queue_depth", "Records waiting for the telemetry writer", multiprocess_mode="livesum"
)
TELEMETRY_DROPPED = Labelled(
    Counter("dspy_telemetry_records_dropped_total", "Telemetry records dropped (never written)", ["reason"])
)
TELEMETRY_WRITTEN = Counter("dspy_telemetry_records_written_total", "Telemetry records written")
TELEMETRY_WRITE_ERRORS = Counter(
    "dspy_telemetry_write_errors_total", "Failed telemetry write attempts (each one retried)"
)

_REJECTION_REASONS = {
    400: "bad_request",
    413: "too_large",
    422: "invalid",
    429: "overloaded",
    503: "unavailable",
}


def outcome(status_code: int) -> str:
    """A small, fixed label set: success, rejected, client_error, cancelled, timeout, error."""
    if status_code < 400:
        return "success"
    if status_code in _REJECTION_REASONS:
        return "rejected"
    if status_code == 499:
        return "cancelled"
    if status_code == 504:
        return "timeout"
    return "client_error" if status_code < 500 else "error"


def rejection_reason(status_code: int) -> str | None:
    return _REJECTION_REASONS.get(status_code)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition() -> tuple[bytes, str]:
    """The text exposition of every worker's metrics. Reads files in multiprocess mode: run off the loop."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


# django-prometheus makes its two migration gauges with prometheus-client's default multiprocess
# mode ("all"): one series per worker pid, and a dead worker's kept. Every process sees the same
# database, so the latest value written by any of them is the answer: the same gauges, remade
# with mode "mostrecent" before anything sets them.
MIGRATION_GAUGES = {  # module attribute: (name, help), as django-prometheus 2.5.0 declares them
    "applied_migrations": (
        "django_migrations_applied_total",
        "Count of applied migrations by database connection",
    ),
    "unapplied_migrations": (
        "django_migrations_unapplied_total",
        "Count of unapplied migrations by database connection",
    ),
}
for _attribute, (_name, _help) in MIGRATION_GAUGES.items():
    REGISTRY.unregister(getattr(django_migrations, _attribute))
    _remade = Gauge(_name, _help, ["connection"], multiprocess_mode="mostrecent")
    setattr(django_migrations, _attribute, _remade)


def export_migrations() -> None:
    """Set django-prometheus's migration gauges from the database (once per process, at start-up).

    Not in ``AppConfig.ready`` (``PROMETHEUS_EXPORT_MIGRATIONS``): that would query the database at
    import, in every management command too.
    """
    django_migrations.ExportMigrations()
