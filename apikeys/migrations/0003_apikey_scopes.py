"""API key scopes. Keys made before scopes get ``invoke,read``, what a new key gets: they keep
running programs and reading their own calls and spend, and stop reading other keys' (issue 21)."""

from django.db import migrations, models

import apikeys.models


class Migration(migrations.Migration):
    dependencies = [
        ("apikeys", "0002_quotas_limits"),
    ]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="scopes",
            field=models.CharField(
                blank=True,
                db_default="invoke,read",
                default="invoke,read",
                help_text="Comma-separated: invoke (run programs), read (its own logs and spend), "
                "admin (every key's logs and spend). Empty: invoke,read",
                max_length=40,
                validators=[apikeys.models.validate_scopes],
            ),
        ),
    ]
