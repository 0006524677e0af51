"""API keys: only a SHA-256 of each key is stored; the key itself is shown once, when it is created.

A key is ``dsk_<prefix>_<secret>``: the prefix (8 characters, unique) names the key in lists and
logs without revealing it, the secret carries 256 random bits. A hash of such a key cannot be
reversed or guessed, so a fast hash is enough (slow password hashers exist for low-entropy passwords).
"""

import hashlib
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django_prometheus.models import ExportModelOperationsMixin

KEY_PREFIX = "dsk_"

# What a key may do (docs/DEPLOYMENT.md, "Who can read what"): ``invoke`` runs programs through
# every door; ``read`` reads its own calls (``/api/logs``) and totals (``/api/metrics``);
# ``admin`` everything, every key's calls and spend included.
SCOPES = ("invoke", "read", "admin")
DEFAULT_SCOPES = "invoke,read"


def parse_scopes(text: str) -> frozenset[str]:
    """``"invoke,read"`` as a set; raises ValidationError naming an unknown scope or an empty list."""
    scopes = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(scopes.difference(SCOPES))
    if unknown:
        raise ValidationError(f"unknown scope(s) {', '.join(unknown)}: choose from {', '.join(SCOPES)}")
    if not scopes:
        raise ValidationError(f"at least one scope: {', '.join(SCOPES)}")
    return scopes


def normalized_scopes(text: str) -> str:
    """``text`` checked, in canonical order (``"read, invoke"``: ``"invoke,read"``); empty: the default."""
    scopes = parse_scopes(text or DEFAULT_SCOPES)
    return ",".join(scope for scope in SCOPES if scope in scopes)


def validate_scopes(text: str) -> None:
    parse_scopes(text)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKey(ExportModelOperationsMixin("apikey"), models.Model):
    name = models.CharField(max_length=100, help_text="Who or what uses this key (shown in the logs)")
    prefix = models.CharField(max_length=16, unique=True, editable=False, help_text="Public part of the key")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, editable=False
    )
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires")
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    scopes = models.CharField(
        max_length=40,
        default=DEFAULT_SCOPES,
        db_default=DEFAULT_SCOPES,  # rows inserted without the ORM (scripts, tests) too
        blank=True,  # empty in a form: the default
        validators=[validate_scopes],
        help_text="Comma-separated: invoke (run programs), read (its own logs and spend), "
        "admin (every key's logs and spend). Empty: invoke,read",
    )
    # Quotas (apikeys/quotas.py), shared by every server through Redis; empty: no limit.
    rpm = models.PositiveIntegerField(
        null=True, blank=True, verbose_name="requests per minute", help_text="Empty: no limit"
    )
    tokens_per_day = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Prompt + completion tokens per rolling 24 hours. Empty: no limit"
    )
    budget_usd = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        verbose_name="budget (USD)",
        help_text="Estimated LM cost per rolling 30 days. Empty: no limit",
    )
    max_in_flight = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests running at once, across every server. Empty: no limit"
    )

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.display_prefix})"

    @property
    def display_prefix(self) -> str:
        return f"{KEY_PREFIX}{self.prefix}_…"

    def status(self, now: datetime | None = None) -> str:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"
