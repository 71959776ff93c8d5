"""How webhook requests are signed, and how a receiver checks them.

Signatures follow the Standard Webhooks spec (`webhook-id`, `webhook-timestamp`,
`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), computed by the
`standardwebhooks` package; several secrets may be configured so a receiver can rotate.
Receivers verify with `verify_webhook` (or `standardwebhooks.Webhook(secret).verify`).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from standardwebhooks import Webhook


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def signature_headers(
    webhook_secrets: Iterable[str], message_id: str, timestamp: datetime, body: str
) -> dict[str, str]:
    """Standard Webhooks headers; one `v1,` signature per configured secret."""
    signatures = [Webhook(secret).sign(message_id, timestamp, body) for secret in webhook_secrets]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


def verify_webhook(body: bytes | str, headers: Mapping[str, str], secret: str) -> Any:
    """For receivers: check a delivery's signature and age, return its JSON payload.

    Raises `standardwebhooks.WebhookVerificationError` when the signature does not match
    or the timestamp is more than five minutes off.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    return Webhook(secret).verify(body, lowered)
