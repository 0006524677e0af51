"""ProgramStats: a DDSketch of the latencies (``latency_sketch``) replaces the 31 fixed buckets.

Percentiles then count the requests written from this migration on; the call counts, tokens,
cost and mean latency keep their history (docs/TELEMETRY.md, "Percentiles").
"""

from django.db import migrations, models

OLD_BUCKETS = [f"latency_{index:02d}" for index in range(31)]


class Migration(migrations.Migration):
    dependencies = [("telemetry", "0003_inferencelog_source")]

    operations = [
        *(migrations.RemoveField(model_name="programstats", name=name) for name in OLD_BUCKETS),
        migrations.AddField(
            model_name="programstats",
            name="latency_sketch",
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
