"""Two partial indexes of the failed requests, built without blocking the writer on PostgreSQL."""

from typing import Any

from django.db import migrations, models


class AddIndexConcurrently(migrations.AddIndex):
    """``CREATE INDEX CONCURRENTLY`` on PostgreSQL (the writer's inserts go on while a large log is
    indexed); a plain ``CREATE INDEX`` elsewhere. Django's own operation is PostgreSQL-only."""

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            concurrently = {"concurrently": True} if schema_editor.connection.vendor == "postgresql" else {}
            schema_editor.add_index(model, self.index, **concurrently)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            concurrently = {"concurrently": True} if schema_editor.connection.vendor == "postgresql" else {}
            schema_editor.remove_index(model, self.index, **concurrently)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("telemetry", "0007_upstream_attempts"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="inferencelog",
            index=models.Index(
                condition=models.Q(("success", False)),
                fields=["-created_at", "-id"],
                name="telemetry_log_failed",
            ),
        ),
        AddIndexConcurrently(
            model_name="inferencelog",
            index=models.Index(
                condition=models.Q(("success", False)),
                fields=["program", "-created_at", "-id"],
                name="telemetry_log_program_failed",
            ),
        ),
    ]
