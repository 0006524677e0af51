"""A key's own calls, newest first (``/api/logs`` for a key without the admin scope), indexed without
blocking the writer on PostgreSQL."""

from importlib import import_module

from django.db import migrations, models

# The concurrent AddIndex of 0008 (a module name Python's import statement cannot spell).
failure_indexes = import_module("telemetry.migrations.0008_logs_failure_indexes")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("telemetry", "0008_logs_failure_indexes"),
    ]

    operations = [
        failure_indexes.AddIndexConcurrently(
            model_name="inferencelog",
            index=models.Index(
                condition=models.Q(("api_key_id__isnull", False)),
                fields=["api_key_id", "program", "-created_at", "-id"],
                name="telemetry_log_key_recent",
            ),
        ),
    ]
