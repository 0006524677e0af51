from django.apps import AppConfig


class JobsConfig(AppConfig):
    """Batch jobs over the task engine (docs/JOBS.md): our tables hold the state, the engine moves work."""

    name = "jobs"
    verbose_name = "Batch jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from jobs.usage import subscribe_job_usage

        subscribe_job_usage()
