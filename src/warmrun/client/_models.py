"""What the client hands back: typed, read-only mirrors of the API's resources.

Fields the server adds later are kept (`extra="allow"`) rather than refused, so an
older client keeps working against a newer deployment.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "timed_out"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "timed_out"})


class _Resource(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class RunProgress(_Resource):
    """Where the run is: the pipeline's current step and how much of it is done."""

    step: str | None = None
    steps_completed: int = 0
    steps_total: int | None = None
    fraction: float | None = None
    message: str | None = None


class RunErrorInfo(_Resource):
    """Why a run failed or timed out: the exception type (or warmrun's reason) and text."""

    type: str
    message: str


class RunWebhook(_Resource):
    url: str
    state: str
    attempts: int = 0
    last_error: str | None = None


class RunLinks(_Resource):
    self: str
    cancel: str | None = None
    events: str | None = None
    temporal_ui: str | None = None


class Run(_Resource):
    """One run as `GET /runs/{run_id}` describes it: a snapshot, not a live object."""

    run_id: str
    run_name: str | None = None
    pipeline_name: str
    deployment_name: str
    status: RunStatus
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempt: int = 0
    cancel_requested: bool = False
    progress: RunProgress | None = None
    outputs: dict[str, Any] | None = None
    error: RunErrorInfo | None = None
    webhook: RunWebhook | None = None
    links: RunLinks | None = None

    @property
    def is_terminal(self) -> bool:
        """True once the run has ended, whichever way; its state no longer changes."""
        return self.status in TERMINAL_STATUSES


class AcceptedRun(_Resource):
    """The `202 Accepted` answer: the run exists durably, nothing more is known yet."""

    run_id: str
    status: RunStatus = "queued"
    created_at: datetime | None = None
    location: str | None = None
