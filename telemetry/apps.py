from django.apps import AppConfig


class TelemetryConfig(AppConfig):
    """Inference logs, counters and metrics (filled in by the telemetry work)."""

    name = "telemetry"
    default_auto_field = "django.db.models.BigAutoField"
