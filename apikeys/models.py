"""API keys: only a SHA-256 of each key is stored; the key itself is shown once, when it is created.

A key is ``dsk_<prefix>_<secret>``: the prefix (8 characters, unique) names the key in lists and
logs without revealing it, the secret carries 256 random bits. A hash of such a key cannot be
reversed or guessed, so a fast hash is enough (slow password hashers exist for low-entropy passwords).
"""

import hashlib
from datetime import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone
from django_prometheus.models import ExportModelOperationsMixin

KEY_PREFIX = "dsk_"


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
