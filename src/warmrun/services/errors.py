"""What the run services refuse, as exceptions; `warmrun.api.problems` maps each to HTTP.

    RunServiceError
     ├── RunNotFound            no run of this deployment has that id (404)
     ├── RunAlreadyEnded        a cancel came after the run's end (409)
     ├── InvalidPageToken       a page token this API did not hand out (422)
     ├── IdempotencyKeyReused   the key names a run started by another request (422)
     ├── CallbackRefused        the callback_url may not be called (422)
     ├── WebhooksDisabled       no webhook secret is configured (422)
     ├── BacklogFull            the deployment's backlog is at its limit (429)
     ├── TooManyStreams         this replica has as many event streams open as it takes (429)
     └── ReplicaDraining        this replica is shutting down (503)

Temporal being unreachable is not here: it surfaces as the SDK's `RPCError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from warmrun.resource import Run


class RunServiceError(Exception):
    """Base of what a run service refuses to do."""


class RunNotFound(RunServiceError):
    def __init__(self, run_id: str, deployment: str) -> None:
        super().__init__(f"no run {run_id!r} in deployment {deployment!r}")
        self.run_id = run_id
        self.deployment = deployment


class RunAlreadyEnded(RunServiceError):
    def __init__(self, run: Run) -> None:
        super().__init__(f"run {run.run_id!r} already ended: {run.status}")
        self.run = run


class InvalidPageToken(RunServiceError):
    def __init__(self) -> None:
        super().__init__(
            "not a page token of this listing: pass the `next_page_token` of the page "
            "before, with the same `status` filter"
        )


class IdempotencyKeyReused(RunServiceError):
    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"this Idempotency-Key already names run {run_id!r}, which was started with a "
            "different request body; use a new key for a new request"
        )
        self.run_id = run_id


class CallbackRefused(RunServiceError):
    """The callback_url fails the webhook target check (scheme, host, address)."""


class WebhooksDisabled(RunServiceError):
    def __init__(self) -> None:
        super().__init__("this deployment has no WARMRUN_WEBHOOK_SECRET, so it sends no webhooks")


class BacklogFull(RunServiceError):
    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(
            f"the deployment has {limit} runs queued or running (its limit); "
            f"retry in about {retry_after} s"
        )
        self.limit = limit
        self.retry_after = retry_after


class TooManyStreams(RunServiceError):
    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(
            f"this replica has {limit} event streams open (its limit); retry in about "
            f"{retry_after} s, or poll GET /runs/{{run_id}} meanwhile"
        )
        self.limit = limit
        self.retry_after = retry_after


class ReplicaDraining(RunServiceError):
    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "this replica is shutting down and takes no new runs; retry (another replica)"
        )
        self.retry_after = retry_after
