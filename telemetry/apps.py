from django.apps import AppConfig


class TelemetryConfig(AppConfig):
    """One record per program request, live counters, database aggregates, /metrics (docs/TELEMETRY.md)."""

    name = "telemetry"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from telemetry.subscribers import subscribe_request_events

        subscribe_request_events()
