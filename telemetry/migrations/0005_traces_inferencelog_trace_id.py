from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("telemetry", "0004_sketches_latency_sketch"),
    ]

    operations = [
        migrations.AddField(
            model_name="inferencelog",
            name="trace_id",
            field=models.CharField(blank=True, max_length=32, null=True),
        ),
        migrations.AddIndex(
            model_name="inferencelog",
            index=models.Index(
                condition=models.Q(("trace_id__isnull", False)),
                fields=["trace_id"],
                name="telemetry_log_trace_id",
            ),
        ),
    ]
