"""Inference records and the aggregates the writer keeps next to them.

``InferenceLog`` has one row per finished program request. The aggregates (``ProgramStats``,
``ModelStats``) are what every read uses: ``/api/metrics`` and the admin dashboard never scan the
log table, so their cost does not grow with it. The writer updates the aggregates with ``F()``
increments in the same transaction as the log rows, so several processes (gunicorn workers,
machines) add up without a lost update and a retried batch is never counted twice. The latency
sketch (``ProgramStats.latency_sketch``) is merged under the row's lock instead
(``telemetry.storage``): a sketch is not a sum of columns.
"""

from datetime import UTC, datetime

from django.db import models
from django_prometheus.models import ExportModelOperationsMixin

# ``period_s`` of the all-time rows; the others are the dashboard's time buckets.
TOTAL = 0
MINUTE = 60
TEN_MINUTES = 600
HOUR = 3600
PERIODS = (TOTAL, MINUTE, TEN_MINUTES, HOUR)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # period_start of the all-time rows


class InferenceLog(models.Model):
    """One finished request to a program, whatever its outcome."""

    program = models.CharField(max_length=200)
    model_alias = models.CharField(max_length=100, blank=True)
    model = models.CharField(max_length=200, blank=True)
    request_id = models.CharField(max_length=128)
    worker = models.CharField(max_length=100, blank=True, help_text="host:pid of the process that answered")
    # Who called (apikeys): the API key, or "user <name>" for the playground; empty with auth off.
    api_key_id = models.PositiveBigIntegerField(null=True, blank=True)
    api_key_name = models.CharField(max_length=140, blank=True)
    # The front door of the call (programs.calls): http, gateway, batch, stream, mcp, cron; and which.
    source = models.CharField(max_length=20, default="http")
    entry = models.CharField(max_length=200, blank=True, help_text="gateway class, job or tool")
    # The OpenTelemetry trace of the request (32 hex digits); null when it was not traced, so the
    # partial index below holds the traced rows only and costs nothing with tracing off.
    trace_id = models.CharField(max_length=32, null=True, blank=True)  # noqa: DJ001
    inputs = models.JSONField(null=True, blank=True)
    outputs = models.JSONField(null=True, blank=True)
    success = models.BooleanField()
    status_code = models.PositiveSmallIntegerField()
    error_type = models.CharField(max_length=200, blank=True)
    error_message = models.TextField(blank=True)
    duration_ms = models.FloatField(null=True, blank=True, help_text="null: refused before the program ran")
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.FloatField(null=True, blank=True, help_text="null: no price known for the model")
    lm_calls = models.JSONField(default=list, blank=True)
    # programs/upstream.py: the alias that answered the last LM call (a fallback's when one did;
    # empty when none answered) and the upstream requests the LM calls took, retries included.
    answered_by = models.CharField(max_length=100, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # The program version that ran the call ("": unversioned) and whether it was a shadow run.
    version = models.CharField(max_length=20, blank=True, default="")
    shadow = models.BooleanField(default=False)
    created_at = models.DateTimeField(help_text="when the response was sent")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["program", "-created_at", "-id"], name="telemetry_log_program_recent"),
            models.Index(fields=["request_id"], name="telemetry_log_request_id"),
            # One version's calls (``/api/logs/{P}?version=v3``, per-version metrics), newest first.
            models.Index(
                fields=["program", "version", "-created_at", "-id"], name="telemetry_log_version_recent"
            ),
            # One version's calls across programs, and one status's (alone or of one program), newest
            # first: the admin's version and status filters read their page and capped count here
            # (docs/TELEMETRY.md, "Filters at 10 million rows").
            models.Index(fields=["version", "-created_at", "-id"], name="telemetry_log_version_only"),
            models.Index(fields=["status_code", "-created_at", "-id"], name="telemetry_log_status_recent"),
            models.Index(
                fields=["program", "status_code", "-created_at", "-id"], name="telemetry_log_program_status"
            ),
            models.Index(
                fields=["version", "status_code", "-created_at", "-id"], name="telemetry_log_version_status"
            ),
            # A key's own calls (``/api/logs`` for a key without the admin scope), newest first.
            models.Index(
                fields=["api_key_id", "program", "-created_at", "-id"],
                condition=models.Q(api_key_id__isnull=False),
                name="telemetry_log_key_recent",
            ),
            models.Index(fields=["created_at"], name="telemetry_log_created_at"),
            models.Index(
                fields=["trace_id"], name="telemetry_log_trace_id", condition=models.Q(trace_id__isnull=False)
            ),
            # Failures only (a few % of the rows): the admin's "success: no" filter, with or without
            # a program, reads its page and its capped count from these instead of walking past
            # every success (docs/TELEMETRY.md, "A month of logs").
            models.Index(
                fields=["-created_at", "-id"], condition=models.Q(success=False), name="telemetry_log_failed"
            ),
            models.Index(
                fields=["program", "-created_at", "-id"],
                condition=models.Q(success=False),
                name="telemetry_log_program_failed",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.program} {self.status_code} {self.request_id}"


class CallTotals(models.Model):
    """The counters a program's and a version's aggregate rows both keep (read by
    ``telemetry.selectors.counters_from_row``, merged by ``telemetry.storage._merge_stats``)."""

    call_count = models.PositiveBigIntegerField(default=0)
    success_count = models.PositiveBigIntegerField(default=0)
    error_count = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.FloatField(default=0.0)
    last_call_at = models.DateTimeField(null=True, blank=True)
    duration_ms_sum = models.FloatField(default=0.0)
    # telemetry.sketches.LatencySketch.to_json(): the DDSketch bins of every timed request here.
    latency_sketch = models.JSONField(default=dict, blank=True)

    class Meta:
        abstract = True


class ProgramStats(ExportModelOperationsMixin("programstats"), CallTotals):
    """A program's totals (``period_s`` 0) or one time bucket of the dashboard's charts."""

    program = models.CharField(max_length=200)
    period_s = models.PositiveIntegerField(help_text="0 = all time; else the bucket length in seconds")
    period_start = models.DateTimeField()

    class Meta(CallTotals.Meta):
        verbose_name = "program stats"
        verbose_name_plural = "program stats"
        constraints = [
            models.UniqueConstraint(
                fields=["period_s", "period_start", "program"], name="telemetry_programstats_bucket"
            )
        ]

    def __str__(self) -> str:
        return f"{self.program} ({self.period_s}s from {self.period_start:%Y-%m-%d %H:%M})"


class VersionStats(CallTotals):
    """A program version's all-time totals (``/api/metrics/{P}``'s ``versions``), added by the writer
    in the transaction of the log rows, so reading a version's numbers is one row, not a scan of
    its calls. Shadow runs are counted in them and apart (``shadow_count``)."""

    program = models.CharField(max_length=200)
    version = models.CharField(max_length=20)
    shadow_count = models.PositiveBigIntegerField(default=0)

    class Meta(CallTotals.Meta):
        verbose_name = "version stats"
        verbose_name_plural = "version stats"
        constraints = [
            models.UniqueConstraint(fields=["program", "version"], name="telemetry_versionstats_version")
        ]

    def __str__(self) -> str:
        return f"{self.program} {self.version}"


class ModelStats(ExportModelOperationsMixin("modelstats"), models.Model):
    """LM calls per program and model: all time (``period_s`` 0) or per time bucket."""

    program = models.CharField(max_length=200)
    model = models.CharField(max_length=200)
    period_s = models.PositiveIntegerField()
    period_start = models.DateTimeField()
    call_count = models.PositiveBigIntegerField(default=0)
    attempt_count = models.PositiveBigIntegerField(default=0, help_text="upstream requests, retries included")
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.FloatField(default=0.0)

    class Meta:
        verbose_name = "model stats"
        verbose_name_plural = "model stats"
        constraints = [
            models.UniqueConstraint(
                fields=["period_s", "period_start", "program", "model"], name="telemetry_modelstats_bucket"
            )
        ]

    def __str__(self) -> str:
        return f"{self.program}/{self.model} ({self.period_s}s from {self.period_start:%Y-%m-%d %H:%M})"


class KeyDailyStats(models.Model):
    """An API key's use in one UTC day, kept by the writer with the log rows (same transaction).

    Spend per key (today, this month: at most 31 rows a key) for ``/api/metrics`` and the admin,
    without reading ``InferenceLog``. Only calls made with a key (``api_key_id`` set) count.
    """

    api_key_id = models.PositiveBigIntegerField()
    day = models.DateField()
    request_count = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.FloatField(default=0.0)

    class Meta:
        verbose_name = "API key daily stats"
        verbose_name_plural = "API key daily stats"
        constraints = [
            models.UniqueConstraint(fields=["api_key_id", "day"], name="telemetry_keydailystats_day")
        ]

    def __str__(self) -> str:
        return f"key {self.api_key_id} on {self.day:%Y-%m-%d}"
