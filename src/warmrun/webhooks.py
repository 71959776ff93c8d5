"""Webhooks: which targets may be called (SSRF guard) and how requests are signed.

Signatures follow the Standard Webhooks spec (`webhook-id`, `webhook-timestamp`,
`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), computed by the
`standardwebhooks` package; several secrets may be configured so a receiver can rotate.
Receivers verify with `verify_webhook` (or `standardwebhooks.Webhook(secret).verify`).

A target must be http(s) and every address its host resolves to must be public,
unless the host is listed in `WARMRUN_WEBHOOK_ALLOWED_HOSTS`. The check runs when the
run is submitted (422 for what can be known then) and again at each delivery, against
the addresses the request then connects to, so a DNS answer that changes after
submission cannot aim a delivery at an internal service.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import secrets
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from standardwebhooks import Webhook

_METADATA_HOSTS = {"metadata.google.internal", "metadata", "instance-data"}


class WebhookTargetRefused(Exception):
    """The callback URL may not be called from this deployment."""


@dataclass(frozen=True)
class Target:
    url: str
    host: str
    port: int
    addresses: tuple[str, ...]


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def check_url(url: str) -> tuple[str, int]:
    """Scheme and host checks that need no DNS; returns (host, port)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise WebhookTargetRefused(f"callback_url must be http or https, not {parts.scheme!r}")
    if not parts.hostname:
        raise WebhookTargetRefused("callback_url has no host")
    if parts.username or parts.password:
        raise WebhookTargetRefused("callback_url must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise WebhookTargetRefused("callback_url has an invalid port") from None
    return parts.hostname.lower().rstrip("."), port


async def resolve_target(url: str, allowed_hosts: Iterable[str]) -> Target:
    """Check `url` and resolve its host; refuse internal addresses unless allowed."""
    host, port = check_url(url)
    allowed = {name.lower().rstrip(".") for name in allowed_hosts}
    if host in _METADATA_HOSTS and host not in allowed:
        raise WebhookTargetRefused(f"{host} is a cloud metadata endpoint")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise WebhookTargetRefused(f"cannot resolve {host}: {err.strerror}") from None
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    if host not in allowed:
        for address in addresses:
            if not _is_public(address):
                raise WebhookTargetRefused(
                    f"{host} resolves to {address}, a private, loopback, link-local or "
                    "reserved address; list the host in WARMRUN_WEBHOOK_ALLOWED_HOSTS to "
                    "allow it"
                )
    return Target(url=url, host=host, port=port, addresses=addresses)


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


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
