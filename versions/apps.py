from django.apps import AppConfig


class VersionsConfig(AppConfig):
    """Program versions: a registry of saved states, aliases (splits, shadows), live on every
    worker (docs/VERSIONS.md). Plugs into the serving core through its version resolver."""

    name = "versions"
    verbose_name = "Program versions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from programs.program import install_resolver
        from versions.resolver import resolver

        install_resolver(resolver)
