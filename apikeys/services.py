"""Writes: create and revoke keys. Lookups on the request path are in :mod:`apikeys.auth`."""

import secrets
from datetime import datetime
from typing import Any

from django.utils import timezone

from apikeys.models import DEFAULT_SCOPES, KEY_PREFIX, ApiKey, key_hash, normalized_scopes


def api_key_issue(key: ApiKey) -> str:
    """Give an unsaved key its prefix and hash; the returned key is the only copy there will be."""
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    token = f"{KEY_PREFIX}{prefix}_{secret}"
    key.prefix = prefix
    key.key_hash = key_hash(token)
    return token


def api_key_create(
    name: str,
    expires_at: datetime | None = None,
    created_by: Any = None,
    scopes: str = DEFAULT_SCOPES,
    **quotas: Any,
) -> tuple[ApiKey, str]:
    """``scopes``: comma-separated ``invoke``, ``read``, ``admin``. ``quotas``: ``rpm``,
    ``tokens_per_day``, ``budget_usd``, ``max_in_flight`` (None: no limit)."""
    scopes = normalized_scopes(scopes)  # raises ValidationError naming a bad scope
    key = ApiKey(name=name, expires_at=expires_at, created_by=created_by, scopes=scopes, **quotas)
    key.full_clean(exclude=["prefix", "key_hash"])
    token = api_key_issue(key)
    key.save()
    return key, token


def api_key_revoke(keys: Any) -> int:
    """Revoke a queryset of keys (already revoked ones keep their date); the number revoked.

    Running servers stop accepting them within their key cache's TTL (:mod:`apikeys.auth`).
    """
    return keys.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
