from django.apps import AppConfig


class ProgramsConfig(AppConfig):
    """Discovers DSPy modules and serves each one as an async endpoint."""

    name = "programs"
    verbose_name = "DSPy programs"
