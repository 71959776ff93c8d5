"""`Idempotency-Key` (IETF httpapi draft): one key, one run, for this deployment.

The run_id is derived from the deployment and the key, so Temporal's workflow-ID
policies do the deduplicating (across replicas and concurrent duplicates) and no
in-process table is needed. A fingerprint of the request in the run's memo tells a
retry (same request) from a reuse of the key for another request.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from warmrun.services.start import RunRequest

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
KEY_PATTERN = r"^[\x20-\x7e]+$"
"""Printable ASCII, as header values are."""
RUN_ID_PREFIX = "idem-"


def idempotent_run_id(deployment: str, key: str) -> str:
    digest = hashlib.sha256(f"{deployment}\n{key}".encode()).digest()
    return RUN_ID_PREFIX + base64.urlsafe_b64encode(digest).decode().rstrip("=")[:32]


def request_fingerprint(request: RunRequest) -> str:
    """Of what the request asks for: the parameters as the pipeline sees them (defaults
    filled, so `{}` and no parameters are the same request) and the other fields. How
    the caller waits (`async`, `Prefer`) is not part of it: a sync call may be retried
    as an async one with the same key."""
    canonical = json.dumps(
        {
            "run_name": request.run_name,
            "timeout": request.timeout,
            "callback_url": request.callback_url,
            "callback_events": request.callback_events,
            "parameters": request.parameters,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
