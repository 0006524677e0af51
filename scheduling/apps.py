from django.apps import AppConfig


class SchedulingConfig(AppConfig):
    """dspy-cli's CronGateway jobs, each fire time claimed once in the database (docs/DSPY_CLI.md)."""

    name = "scheduling"
    verbose_name = "Cron jobs"
    default_auto_field = "django.db.models.BigAutoField"
