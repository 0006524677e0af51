"""The admin's status and version filters on their own indexes, built without blocking the writer."""

from importlib import import_module

from django.db import migrations, models

# CREATE INDEX CONCURRENTLY on PostgreSQL, a plain CREATE INDEX elsewhere (0008's operation).
AddIndexConcurrently = import_module("telemetry.migrations.0008_logs_failure_indexes").AddIndexConcurrently


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("telemetry", "0010_inferencelog_version"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="inferencelog",
            index=models.Index(fields=["version", "-created_at", "-id"], name="telemetry_log_version_only"),
        ),
        AddIndexConcurrently(
            model_name="inferencelog",
            index=models.Index(
                fields=["status_code", "-created_at", "-id"], name="telemetry_log_status_recent"
            ),
        ),
        AddIndexConcurrently(
            model_name="inferencelog",
            index=models.Index(
                fields=["program", "status_code", "-created_at", "-id"], name="telemetry_log_program_status"
            ),
        ),
        AddIndexConcurrently(
            model_name="inferencelog",
            index=models.Index(
                fields=["version", "status_code", "-created_at", "-id"], name="telemetry_log_version_status"
            ),
        ),
    ]
