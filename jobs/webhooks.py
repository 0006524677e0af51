"""Webhooks, signed per the Standard Webhooks spec (https://www.standardwebhooks.com/).

``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature: v1,<base64
HMAC-SHA256 of "id.timestamp.body">`` keyed with ``DSPY_WEBHOOK_SECRET`` (``whsec_`` + base64, the
spec's format). A delivery that fails (no answer, not 2xx) is tried again with backoff for a day,
the first retry 5 s later; the target is checked against private addresses before each attempt.
"""

import base64
import hashlib
import hmac
import logging
import time

import httpx
from django.conf import settings
from django.utils import timezone

from jobs import engine
from jobs.addresses import AddressRefused, check_url
from jobs.models import Run

logger = logging.getLogger(__name__)

# Seconds before each retry: the first within 10 s, then growing; the sum is just over a day.
BACKOFF_S = (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 30000)
TIMEOUT_S = 10.0


def signature_headers(message_id: str, body: bytes, secret: str, now: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers of ``body``."""
    timestamp = str(int(time.time()) if now is None else now)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": f"v1,{base64.b64encode(signed).decode()}",
    }


def deliver(run_id: str, attempt: int) -> None:
    """One delivery attempt of run ``run_id``'s webhook; queues the next one if it fails."""
    run = Run.objects.filter(id=run_id).first()
    if run is None or not run.webhook_url or run.webhook_delivered_at is not None:
        return
    outcome = _post(run)
    delivered = outcome.startswith("2")
    Run.objects.filter(id=run.id).update(
        webhook_attempts=attempt,
        webhook_status=outcome[:200],
        webhook_delivered_at=timezone.now() if delivered else None,
    )
    if not delivered and attempt <= len(BACKOFF_S):
        engine.submit_later(BACKOFF_S[attempt - 1], "deliver_webhook", str(run.id), attempt + 1)
    elif not delivered:
        logger.warning("run %s: webhook not delivered after %d attempts (%s)", run.id, attempt, outcome)


def _post(run: Run) -> str:
    """The attempt's outcome: the status code, or why there was none."""
    try:
        check_url(run.webhook_url)
    except AddressRefused as exc:
        return f"refused: {exc}"
    body = run.answer.encode()
    headers = {"content-type": "application/json"}
    if settings.DSPY_WEBHOOK_SECRET:
        headers.update(signature_headers(f"msg_{run.id.hex}", body, settings.DSPY_WEBHOOK_SECRET))
    try:
        answer = httpx.post(run.webhook_url, content=body, headers=headers, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return str(answer.status_code)
