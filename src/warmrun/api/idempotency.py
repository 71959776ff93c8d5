"""`Idempotency-Key` (IETF httpapi draft): one key, one run, for this deployment.

The run_id is derived from the deployment and the key, so Temporal's workflow-ID
policies do the deduplicating (across replicas and concurrent duplicates) and no
in-process table is needed. A fingerprint of the request in the run's memo tells a
retry (same body) from a reuse of the key for another request (422).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from warmrun.api.models import InvokeRequestBase
from warmrun.api.problems import Problem

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
KEY_PATTERN = r"^[\x20-\x7e]+$"
"""Printable ASCII, as header values are."""
FINGERPRINT_MEMO = "request_fingerprint"

_IGNORED_FIELDS = {"async_", "skip_artifact_materialization"}
"""How the caller waits is not part of what it asked for: a sync call may be retried
as an async one with the same key."""


def idempotent_run_id(deployment: str, key: str) -> str:
    digest = hashlib.sha256(f"{deployment}\n{key}".encode()).digest()
    return "idem-" + base64.urlsafe_b64encode(digest).decode().rstrip("=")[:32]


def request_fingerprint(body: InvokeRequestBase, parameters: dict[str, Any]) -> str:
    """Of what the request asks for: the parameters as the pipeline sees them (defaults
    filled, so `{}` and no parameters are the same request) and the other fields."""
    asked = body.model_dump(mode="json", exclude={*_IGNORED_FIELDS, "parameters"})
    canonical = json.dumps(
        {**asked, "parameters": parameters}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def key_reused(run_id: str) -> Problem:
    return Problem(
        422,
        "idempotency_key_reused",
        f"this {HEADER} already names run {run_id!r}, which was started with a different "
        "request body; use a new key for a new request",
        run_id=run_id,
    )
