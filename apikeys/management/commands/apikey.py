"""``manage.py apikey create NAME [--expires-in-days N] [--scopes S] [quotas]``, ``revoke NAME_OR_PREFIX``,
``list``.

Scopes (docs/DEPLOYMENT.md, "Who can read what"): ``--scopes invoke,read,admin``, comma-separated;
default ``invoke,read`` (run programs, read its own calls and spend); ``admin`` reads every key's.

Quotas (apikeys/quotas.py; none: no limit): ``--rpm N`` requests per minute, ``--tokens-per-day N``
(rolling 24 hours), ``--budget-usd X`` (estimated LM cost per rolling 30 days), ``--max-in-flight
N`` requests at once, each across every server.

The same as the admin, for scripts and CI: ``create`` prints the key once; it is not stored.
"""

from argparse import ArgumentParser, ArgumentTypeError
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q
from django.utils import timezone

from apikeys.models import DEFAULT_SCOPES, SCOPES, ApiKey
from apikeys.services import api_key_create, api_key_revoke


class Command(BaseCommand):
    help = "Create (prints the key once), revoke or list API keys."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="Create a key and print it (only its hash is stored)")
        create.add_argument("name")
        create.add_argument("--expires-in-days", type=float, help="Expiry, in days from now (default: never)")
        create.add_argument(
            "--scopes",
            default=DEFAULT_SCOPES,
            help=f"Comma-separated, of {', '.join(SCOPES)} (default: {DEFAULT_SCOPES})",
        )
        create.add_argument("--rpm", type=_positive_int, help="Requests per minute (default: no limit)")
        create.add_argument("--tokens-per-day", type=_positive_int, help="Tokens per rolling 24 hours")
        create.add_argument("--budget-usd", type=_budget, help="Estimated LM cost (USD) per rolling 30 days")
        create.add_argument("--max-in-flight", type=_positive_int, help="Requests running at once")
        revoke = actions.add_parser("revoke", help="Revoke the active keys with this name or prefix")
        revoke.add_argument("name_or_prefix")
        actions.add_parser("list", help="List the keys (never the keys themselves)")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "create":
            days = options["expires_in_days"]
            expires_at = timezone.now() + timedelta(days=days) if days is not None else None
            quotas = {name: options[name] for name in QUOTA_OPTIONS}
            try:
                _, token = api_key_create(options["name"], expires_at, scopes=options["scopes"], **quotas)
            except ValidationError as exc:
                if not hasattr(exc, "error_dict"):  # the scopes, checked before the model
                    raise CommandError(f"scopes: {' '.join(exc.messages)}") from None
                raise CommandError(
                    "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
                ) from None
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
                limits = "".join(
                    f"  {name}={getattr(key, name)}"
                    for name in QUOTA_OPTIONS
                    if getattr(key, name) is not None
                )
                self.stdout.write(
                    f"{key.display_prefix}  {key.status():8}  expires {expires}  {key.name}"
                    f"  scopes={key.scopes}{limits}"
                )


QUOTA_OPTIONS = ("rpm", "tokens_per_day", "budget_usd", "max_in_flight")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _budget(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ArgumentTypeError(f"not a number: {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise ArgumentTypeError(f"must be a positive amount of USD, got {text}")
    return value
