"""``manage.py apikey create NAME [--expires-in-days N]`` / ``revoke NAME_OR_PREFIX`` / ``list``.

The same as the admin, for scripts and CI: ``create`` prints the key once; it is not stored.
"""

from argparse import ArgumentParser
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q
from django.utils import timezone

from apikeys.models import ApiKey
from apikeys.services import api_key_create, api_key_revoke


class Command(BaseCommand):
    help = "Create (prints the key once), revoke or list API keys."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="Create a key and print it (only its hash is stored)")
        create.add_argument("name")
        create.add_argument("--expires-in-days", type=float, help="Expiry, in days from now (default: never)")
        revoke = actions.add_parser("revoke", help="Revoke the active keys with this name or prefix")
        revoke.add_argument("name_or_prefix")
        actions.add_parser("list", help="List the keys (never the keys themselves)")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "create":
            days = options["expires_in_days"]
            expires_at = timezone.now() + timedelta(days=days) if days is not None else None
            _, token = api_key_create(options["name"], expires_at)
            self.stdout.write(token)
        elif action == "revoke":
            wanted = options["name_or_prefix"].removeprefix("dsk_").split("_")[0]
            keys = ApiKey.objects.filter(Q(name=options["name_or_prefix"]) | Q(prefix=wanted))
            if not keys.exists():
                raise CommandError(f"no API key named or prefixed {options['name_or_prefix']!r}")
            self.stdout.write(f"revoked {api_key_revoke(keys)} key(s)")
        else:
            for key in ApiKey.objects.all():
                expires = key.expires_at.isoformat() if key.expires_at else "never"
                self.stdout.write(f"{key.display_prefix}  {key.status():8}  expires {expires}  {key.name}")
