from django.apps import AppConfig


class ProgramsConfig(AppConfig):
    """Discovers DSPy modules and serves each one as an async endpoint."""

    name = "programs"
    verbose_name = "DSPy programs"

    def ready(self) -> None:
        import dspysite.checks  # noqa: F401 - registers check --deploy's browser-path checks
