"""`deliver_webhook`: POST one signed event to its target, or say why not.

Temporal retries it (exponential backoff, capped, within a total window): a 2xx is
delivered; 410 stops for good; 408, 425, 429, 5xx and network errors are retried
(honouring `Retry-After`); any other answer is a rejection and stops. The request
goes to the address the SSRF check approved (the Host header and TLS name stay the
URL's), and redirects are not followed.

A receiver's reply is only status and headers to warmrun: at most `REPLY_READ_LIMIT`
bytes of its body are read (quoted in the error of a failed attempt), the connection is
then closed, and the whole attempt is bounded by `attempt_timeout`, so neither a huge
nor a dripping reply can hold the worker's memory or its activity slot.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from warmrun import __version__
from warmrun.metrics import Metrics
from warmrun.resource import RunLinks
from warmrun.run import (
    DELIVER_WEBHOOK_ACTIVITY,
    WEBHOOK_GONE_ERROR,
    WEBHOOK_REFUSED_ERROR,
    WEBHOOK_REJECTED_ERROR,
    DeliveryFailureDetails,
    WebhookDeliveryInput,
    WebhookDeliveryResult,
    temporal_ui_url,
)
from warmrun.settings import Settings
from warmrun.webhooks import (
    WebhookTargetRefused,
    resolve_webhook_target,
    signature_headers,
)

RETRIED_STATUSES = {408, 425, 429}
REPLY_READ_LIMIT = 4096
"""Bytes of a reply's body read at most; the rest is never read."""
REPLY_QUOTE_LIMIT = 200
"""Characters of a reply's body quoted in the error of a failed attempt."""


class WebhookActivities:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics

    @activity.defn(name=DELIVER_WEBHOOK_ACTIVITY)
    async def deliver_webhook(self, input: WebhookDeliveryInput) -> WebhookDeliveryResult:
        try:
            result = await self._deliver(input)
        except ApplicationError as err:
            self._metrics.webhook_deliveries.labels(
                "retrying" if not err.non_retryable else (err.type or "failed")
            ).inc()
            raise
        self._metrics.webhook_deliveries.labels("delivered").inc()
        return result

    async def _deliver(self, input: WebhookDeliveryInput) -> WebhookDeliveryResult:
        settings = self._settings
        webhook_secrets = settings.webhook_secrets()
        if not webhook_secrets:
            raise ApplicationError(
                "WARMRUN_WEBHOOK_SECRET is not set on the worker",
                type=WEBHOOK_REFUSED_ERROR,
                non_retryable=True,
            )
        try:
            target = await resolve_webhook_target(input.url, settings.webhook_allowed_host_list())
        except WebhookTargetRefused as err:
            raise ApplicationError(
                str(err),
                DeliveryFailureDetails(attempts=activity.info().attempt),
                type=WEBHOOK_REFUSED_ERROR,
                non_retryable=True,
            ) from None

        body = json.dumps(
            {**input.payload, **_links(settings, input.payload), "event": input.event},
            separators=(",", ":"),
        )
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"warmrun/{__version__}",
            "Host": target.authority,
            # The reply is read raw and only in part: a compressed one would be noise.
            "Accept-Encoding": "identity",
            **signature_headers(webhook_secrets, input.message_id, datetime.now(UTC), body),
        }
        attempt = activity.info().attempt
        try:
            async with (
                asyncio.timeout(input.attempt_timeout),
                httpx.AsyncClient(timeout=input.attempt_timeout, follow_redirects=False) as http,
                http.stream(
                    "POST",
                    target.pinned_url,
                    content=body,
                    headers=headers,
                    extensions={"sni_hostname": target.host},
                ) as response,
            ):
                code = response.status_code
                reply = b"" if 200 <= code < 300 else await _read_head(response)
        except (httpx.HTTPError, TimeoutError) as err:
            if isinstance(err, TimeoutError):
                what = f"no complete answer within {input.attempt_timeout:g} s"
            else:
                what = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            raise ApplicationError(
                f"attempt {attempt}: {what}", type="WebhookUnreachable"
            ) from None

        if 200 <= code < 300:
            return WebhookDeliveryResult(
                delivered_at=datetime.now(UTC).isoformat(), attempts=attempt, status_code=code
            )
        if code == 410:
            raise ApplicationError(
                "the receiver answered 410 Gone: no more deliveries",
                DeliveryFailureDetails(attempts=attempt),
                type=WEBHOOK_GONE_ERROR,
                non_retryable=True,
            )
        if code in RETRIED_STATUSES or code >= 500:
            raise ApplicationError(
                f"attempt {attempt}: the receiver answered {code}{_quote(reply)}",
                type="WebhookRetry",
                next_retry_delay=_retry_after(response),
            )
        raise ApplicationError(
            f"the receiver answered {code}{_quote(reply)}; not retried",
            DeliveryFailureDetails(attempts=attempt),
            type=WEBHOOK_REJECTED_ERROR,
            non_retryable=True,
        )


def _links(settings: Settings, payload: dict) -> dict:
    run_id = payload.get("run_id", "")
    ui = temporal_ui_url(settings.temporal_ui_url, activity.info().namespace, run_id)
    return {"links": RunLinks.of(run_id, ui).model_dump()}


async def _read_head(response: httpx.Response) -> bytes:
    """The first `REPLY_READ_LIMIT` bytes of the body; leaving the stream then closes
    the connection instead of reading (or buffering) whatever else the receiver sends."""
    head = bytearray()
    async with aclosing(response.aiter_raw()) as chunks:
        async for chunk in chunks:
            head += chunk[: REPLY_READ_LIMIT - len(head)]
            if len(head) >= REPLY_READ_LIMIT:
                break
    return bytes(head)


def _quote(reply: bytes) -> str:
    """A short, printable excerpt of a reply's body for an error message."""
    text = " ".join(reply.decode("utf-8", errors="replace").split())
    text = "".join(char if char.isprintable() else "?" for char in text)
    if not text:
        return ""
    if len(text) > REPLY_QUOTE_LIMIT:
        text = text[: REPLY_QUOTE_LIMIT - 1] + "…"
    return f": {text!r}"


def _retry_after(response: httpx.Response) -> timedelta | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    if value.isdigit():
        return timedelta(seconds=min(int(value), 3600))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when - datetime.now(UTC), timedelta(0))
