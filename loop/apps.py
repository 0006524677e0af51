from django.apps import AppConfig


class LoopConfig(AppConfig):
    """The DSPy loop in production: call traces, feedback, datasets, evaluations (docs/LOOP.md)."""

    name = "loop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from loop.selectors import feedback_metrics
        from loop.subscribers import subscribe
        from telemetry.api import install_metrics_section

        subscribe()
        install_metrics_section(feedback_metrics)
