from django.apps import AppConfig


class LoopConfig(AppConfig):
    """The DSPy loop in production: call traces, feedback, datasets, evaluations (docs/LOOP.md)."""

    name = "loop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from loop.subscribers import subscribe

        subscribe()
