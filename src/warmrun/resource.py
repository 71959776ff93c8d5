"""The run resource: how one run reads from outside (`GET /runs/{run_id}`, and the
`202 Accepted` that names a new one).

The API answers with these models, the run services build them from what Temporal
holds, and `warmrun.client` parses answers into the very same classes, so the server
and its client cannot disagree on a field. They are snapshots (frozen), and they keep
fields they do not know (`extra="allow"`): an older client keeps working against a
newer deployment. Progress and errors are the contract's own shapes (`warmrun.run`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from warmrun.run import Progress, RunError, RunStatus


class _Snapshot(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


WebhookDeliveryState = Literal[
    "pending", "delivering", "retrying", "delivered", "gone", "rejected", "refused", "failed"
]


class RunWebhook(_Snapshot):
    """Delivery of the run's main event to its `callback_url`: the terminal event once
    the run ended, `started` before (if asked for)."""

    url: str
    event: str | None = Field(None, description="The event this state is about.")
    state: WebhookDeliveryState
    attempts: int = 0
    last_error: str | None = None
    delivered_at: datetime | None = None


class RunLinks(_Snapshot):
    self: str
    cancel: str
    events: str = Field(description="Server-sent events of the run's changes.")
    temporal_ui: str

    @classmethod
    def of(cls, run_id: str, temporal_ui: str) -> RunLinks:
        path = f"/runs/{run_id}"
        return cls(self=path, cancel=path, events=f"{path}/events", temporal_ui=temporal_ui)


class AcceptedRun(_Snapshot):
    """The `202 Accepted` answer: the run exists durably on the Temporal server; poll
    `location`."""

    run_id: str
    status: RunStatus = Field(
        RunStatus.QUEUED,
        description="`queued` for a new run; a retry with the Idempotency-Key of an "
        "earlier run says where that run is now.",
    )
    created_at: datetime | None = None
    location: str | None = None


class Run(_Snapshot):
    """One run as the Temporal server knows it: a snapshot, not a live object."""

    run_id: str = Field(description="The run's id: its Temporal workflow ID.")
    run_name: str | None = None
    pipeline_name: str
    deployment_name: str
    status: RunStatus
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempt: int = Field(0, description="Attempt of the pipeline's execution (0: not started).")
    cancel_requested: bool = False
    progress: Progress | None = Field(
        None, description="The step running now, steps done, fraction in [0, 1], a message."
    )
    outputs: dict[str, Any] | None = Field(None, description="Only when the run succeeded.")
    error: RunError | None = Field(
        None,
        description="Why it failed or timed out: the exception type the pipeline raised "
        "(or a warmrun reason such as `RunTimedOut`, `WorkerLost`) and its message.",
    )
    webhook: RunWebhook | None = None
    build_id: str | None = Field(
        None,
        description="The deployment version (build id) the run executes on, or an operator "
        "pinned it to; null until a versioned worker first took it, and for unversioned "
        "workers. Listed ended runs leave it out: `GET /runs/{id}` has it.",
    )
    waiting_for: str | None = Field(
        None,
        description="Why a queued run waits: a pinned run executes only on a worker of its "
        "own build. If none is left, start one or move the run (README, Upgrades).",
    )
    links: RunLinks | None = None
    zenml_run_id: str | None = Field(
        None,
        description="ZenML pipelines only: the id of the ZenML pipeline run this run is "
        "(its `orchestrator_run_id` is this run_id), once it exists.",
    )

    @property
    def is_terminal(self) -> bool:
        """True once the run has ended, whichever way; its state no longer changes."""
        return self.status.is_terminal
