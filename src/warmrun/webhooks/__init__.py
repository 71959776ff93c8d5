"""Webhooks: where they may be sent (the SSRF guard) and how they are signed.

- `targets`: `resolve_webhook_target` checks a callback URL and the addresses its host
  resolves to, at submit and again at every delivery.
- `addresses`: the one table of address blocks that decides which addresses are refused.
- `signing`: Standard Webhooks signatures, and `verify_webhook` for receivers.
"""

from warmrun.webhooks.addresses import BLOCKS, AddressBlock, AddressRefusal, address_refusal
from warmrun.webhooks.signing import new_secret, signature_headers, verify_webhook
from warmrun.webhooks.targets import (
    WebhookTarget,
    WebhookTargetRefused,
    resolve_webhook_target,
)

__all__ = [
    "BLOCKS",
    "AddressBlock",
    "AddressRefusal",
    "WebhookTarget",
    "WebhookTargetRefused",
    "address_refusal",
    "new_secret",
    "resolve_webhook_target",
    "signature_headers",
    "verify_webhook",
]
