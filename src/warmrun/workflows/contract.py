"""The wire contract of a run: what `PipelineRun` takes, returns and reports.

These dataclasses are the public, versioned JSON shapes that any Temporal client
(Python or not) sees. Fields are only ever added, with defaults, so an older caller's
JSON keeps decoding. Unknown JSON fields are ignored by Temporal's converter.
No postponed annotations here: the converter resolves these hints in any workflow
sandbox that imports them.
"""

from dataclasses import asdict, dataclass, field
from typing import Any

WORKFLOW_TYPE = "PipelineRun"
RUN_PIPELINE_ACTIVITY = "run_pipeline"
RUN_POLICY_ACTIVITY = "resolve_run_policy"
WEBHOOK_WORKFLOW_TYPE = "WarmrunWebhookDelivery"
DELIVER_WEBHOOK_ACTIVITY = "deliver_webhook"
TASK_QUEUE_PREFIX = "warmrun-"

# Failure types the workflow reports, so callers can tell a run's end apart
# without parsing messages.
TIMED_OUT_ERROR = "RunTimedOut"
INVALID_PARAMETERS_ERROR = "InvalidParameters"
INVALID_OUTPUTS_ERROR = "InvalidOutputs"
WORKER_LOST_ERROR = "WorkerLost"

WEBHOOK_GONE_ERROR = "WebhookGone"
WEBHOOK_REJECTED_ERROR = "WebhookRejected"
WEBHOOK_REFUSED_ERROR = "WebhookTargetRefused"

WEBHOOK_EVENTS = ("started", "progress", "succeeded", "failed", "cancelled", "timed_out")
TERMINAL_EVENTS = ("succeeded", "failed", "cancelled", "timed_out")
"""Webhook events; without `callback_events` a run sends the terminal one."""

OUTCOME_MEMO = "outcome"
"""Memo key of the `RunEnding` a run's workflow writes as it closes."""
ENDING_MEMO_MAX_BYTES = 1536
"""A `RunEnding` is kept under Temporal's memo warning size (2 KiB by default): larger
outputs or error messages stay in history only."""


def task_queue_for(deployment: str) -> str:
    """The task queue every replica of a deployment polls."""
    return f"{TASK_QUEUE_PREFIX}{deployment}"


def webhook_delivery_id(run_id: str, event: str, sequence: int | None = None) -> str:
    """Workflow ID of one event's delivery: stable, so a retry never sends it twice."""
    suffix = f".{sequence}" if sequence is not None else ""
    return f"{run_id}.webhook.{event}{suffix}"


@dataclass
class RunPolicy:
    """The deployment's settings that shape a run, read by the workflow once per run.

    warmrun's API puts them in the run's input; for a run started by any other client
    they come from a local activity, so the worker's configuration applies to it. Either
    way they are in the history, so replays stay deterministic.
    """

    pipeline_name: str = ""
    heartbeat_timeout: float = 30.0
    default_timeout: float = 3600.0
    max_timeout: float = 86400.0
    max_attempts: int = 5
    """Attempts of `run_pipeline` when its worker is lost (infrastructure retries)."""
    cancel_grace: float = 60.0
    """Seconds a cancelled or timed-out pipeline gets to stop before Temporal gives up."""
    webhook_retry_window: float = 86400.0
    webhook_max_interval: float = 300.0
    webhook_attempt_timeout: float = 10.0


@dataclass
class PipelineRunInput:
    """Input of the `PipelineRun` workflow; only `parameters` is required."""

    parameters: dict[str, Any] = field(default_factory=dict)
    run_name: str | None = None
    timeout: float | None = None
    """Seconds from acceptance (workflow start) before the run ends as timed out."""
    callback_url: str | None = None
    callback_events: list[str] | None = None
    policy: RunPolicy | None = None
    """The deployment's policy, fixed by the replica that accepts the run. Without it
    (a run started by another Temporal client) the workflow asks its worker for it
    with a local activity."""


@dataclass
class Progress:
    """Where a run is; sent as activity heartbeat details so the server holds it."""

    step: str | None = None
    steps_completed: int = 0
    steps_total: int | None = None
    fraction: float | None = None
    message: str | None = None


@dataclass
class StepCheckpoint:
    """A completed `ctx.step(name, fn)`: its JSON result survives a lost worker."""

    name: str
    result: Any = None
    saved: bool = True
    """False when the result was too large to checkpoint: the step runs again on resume."""


@dataclass
class PipelineOutcome:
    """What the `run_pipeline` activity returns on success."""

    outputs: dict[str, Any]
    started_at: str
    finished_at: str
    progress: Progress = field(default_factory=Progress)
    attempt: int = 0


@dataclass
class PipelineRunResult:
    """Output of the `PipelineRun` workflow; `outputs` is the pipeline's JSON object."""

    outputs: dict[str, Any]
    run_name: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    execution_time: float | None = None
    progress: Progress = field(default_factory=Progress)


@dataclass
class RunEnding:
    """How a run ended, in its memo: written by the workflow as it closes, so that one
    `describe()` reads a closed run, listings show its outcome, and any Temporal client
    sees it without decoding the history.

    `complete` is False when the workflow could not say everything (when the pipeline
    started is unknown after a cancel or timeout): readers then take the history,
    which always holds the whole story. Outputs or an error message too large for a
    memo are left out with `result_in_history`: readers take them from the run's close
    event alone.
    """

    status: str
    """succeeded, failed, cancelled or timed_out."""
    complete: bool = False
    started_at: str | None = None
    attempt: int = 0
    progress: Progress | None = None
    outputs: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    result_in_history: bool = False
    """The outputs or the error message were too large to be here: see the close event."""


@dataclass
class RunPipelineInput:
    """Input of the `run_pipeline` activity."""

    parameters: dict[str, Any]
    run_name: str | None = None
    callback_url: str | None = None
    callback_events: list[str] | None = None


@dataclass
class WebhookDeliveryInput:
    """Input of the `WarmrunWebhookDelivery` workflow and its `deliver_webhook` activity."""

    url: str
    event: str
    message_id: str
    payload: dict[str, Any]
    retry_window: float = 86400.0
    max_interval: float = 300.0
    attempt_timeout: float = 10.0


@dataclass
class WebhookDeliveryResult:
    delivered_at: str
    attempts: int
    status_code: int


def run_payload(
    *,
    run_id: str,
    run_name: str | None,
    pipeline_name: str,
    task_queue: str,
    status: str,
    progress: Progress | None = None,
    created_at: str | None = None,
    started_at: str | None = None,
    finished_at: str | None = None,
    attempt: int | None = None,
    outputs: dict[str, Any] | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A webhook body: the run resource as the worker sending it knows the run (the
    delivery adds `links` and `event`)."""
    return {
        "run_id": run_id,
        "run_name": run_name,
        "pipeline_name": pipeline_name,
        "deployment_name": task_queue.removeprefix(TASK_QUEUE_PREFIX),
        "status": status,
        "created_at": created_at,
        "started_at": started_at,
        "finished_at": finished_at,
        "attempt": attempt,
        "cancel_requested": status == "cancelled",
        "progress": asdict(progress) if progress else None,
        "outputs": outputs,
        "error": error,
    }
