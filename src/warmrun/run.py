"""The run contract: one module says what a run is, to every part of warmrun.

The HTTP API, the `PipelineRun` workflow, the activities, the client and the CLI all
import their names from here: the run's statuses, its identifiers and Temporal names,
the JSON shapes its workflow takes, returns and reports (workflow and activity
inputs, heartbeat progress, step checkpoints, failure details), and the memo a run
carries. Nothing else spells a memo key or a details field by hand.

These shapes are public: any Temporal client (Python or not) starts `PipelineRun`
with `PipelineRunInput` JSON and reads `PipelineRunResult` and the memo, and any
Nexus caller sends the same JSON to the `warmrun` service's `run` operation. Fields are
only ever added, with defaults, so an older caller's JSON keeps decoding (Temporal's
converter ignores unknown fields).

The module imports nothing but the standard library, so that `warmrun.client` stays
light and the workflow sandbox can pass it through. No postponed annotations: the
converter resolves these dataclasses' hints wherever it decodes them.
"""

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

# --- statuses -----------------------------------------------------------------------


class RunStatus(StrEnum):
    """Where a run is. `queued` and `running` are open; the other four are terminal."""

    QUEUED = "queued"
    """Accepted; its pipeline has not started (no replica has a free slot yet)."""
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def is_terminal(self) -> bool:
        """True once the run has ended, whichever way; its state no longer changes."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT}
)

CLOSED_AS: dict[str, tuple[RunStatus, ...]] = {
    "Completed": (RunStatus.SUCCEEDED,),
    "Failed": (RunStatus.FAILED, RunStatus.TIMED_OUT),
    "Canceled": (RunStatus.CANCELLED,),
    "Terminated": (RunStatus.FAILED,),
    "TimedOut": (RunStatus.TIMED_OUT,),
}
"""How a closed workflow's execution status (as Temporal's visibility spells it) can
read as a run: a run that timed out by its own timer closes as Failed, and only its
recorded ending (`RunEnding`) tells which; the first status is the one without it."""


class WebhookEvent(StrEnum):
    """What a run's `callback_url` can be told; without `callback_events`, the end."""

    STARTED = "started"
    PROGRESS = "progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


TERMINAL_EVENTS = (
    WebhookEvent.SUCCEEDED,
    WebhookEvent.FAILED,
    WebhookEvent.CANCELLED,
    WebhookEvent.TIMED_OUT,
)


# --- Temporal names -----------------------------------------------------------------

WORKFLOW_TYPE = "PipelineRun"
RUN_PIPELINE_ACTIVITY = "run_pipeline"
RUN_POLICY_ACTIVITY = "resolve_run_policy"
CLOSE_ZENML_RUN_ACTIVITY = "close_zenml_run"
ZENML_RUN_SIGNAL = "zenml_run"
"""Sent by the `run_pipeline` activity of a ZenML pipeline to its own workflow once the
ZenML pipeline run exists: the workflow keeps the link in the run's memo."""
WEBHOOK_WORKFLOW_TYPE = "WarmrunWebhookDelivery"
DELIVER_WEBHOOK_ACTIVITY = "deliver_webhook"
TASK_QUEUE_PREFIX = "warmrun-"
RUN_ID_PREFIX = "run_"
MAX_RUN_ID_LENGTH = 1000
"""Temporal's limit on a workflow ID: longer ids name no run."""
NEXUS_SERVICE = "warmrun"
"""The Nexus service every deployment's worker handles, on the deployment's task queue."""
NEXUS_RUN_OPERATION = "run"
NEXUS_GET_OPERATION = "get"
NEXUS_ENDPOINT_PREFIX = "warmrun-"

# Failure types a run reports, so callers tell its ends apart without parsing messages.
TIMED_OUT_ERROR = "RunTimedOut"
INVALID_PARAMETERS_ERROR = "InvalidParameters"
INVALID_OUTPUTS_ERROR = "InvalidOutputs"
WORKER_LOST_ERROR = "WorkerLost"
TERMINATED_ERROR = "Terminated"

WEBHOOK_GONE_ERROR = "WebhookGone"
WEBHOOK_REJECTED_ERROR = "WebhookRejected"
WEBHOOK_REFUSED_ERROR = "WebhookTargetRefused"
WEBHOOK_UNDELIVERED_ERROR = "WebhookUndelivered"


def task_queue_for(deployment: str) -> str:
    """The task queue every replica of a deployment polls."""
    return f"{TASK_QUEUE_PREFIX}{deployment}"


def worker_deployment_for(deployment: str) -> str:
    """The Temporal Worker Deployment whose versions are the deployment's builds; named
    like its task queue, so that the UI's Deployments page and task queue agree."""
    return f"{TASK_QUEUE_PREFIX}{deployment}"


def deployment_of(task_queue: str) -> str:
    """The deployment whose replicas poll `task_queue`."""
    return task_queue.removeprefix(TASK_QUEUE_PREFIX)


def new_run_id(token: str | None = None) -> str:
    """URL-safe and unguessable (128 random bits): knowing one run's id tells nothing
    of another's. The prefix keeps it from starting with `-`, which CLIs read as an
    option. A workflow passes a deterministic token of its own (`workflow.uuid4().hex`)."""
    return RUN_ID_PREFIX + (token if token is not None else secrets.token_urlsafe(16))


def run_id_for_request(deployment: str, request_id: str) -> str:
    """The run a Nexus start names, derived from its request id: the caller's server
    keeps that id across the retries of one operation's start, so a retried start
    finds the run the first one started instead of starting a second. Shaped like
    `new_run_id`'s (the digest is as unguessable as the request id)."""
    digest = hashlib.sha256(f"{deployment}\n{request_id}".encode()).digest()
    return new_run_id(base64.urlsafe_b64encode(digest).decode()[:22])


def nexus_endpoint_for(deployment: str) -> str:
    """The Nexus endpoint `warmrun dev` creates for a deployment. Endpoint names take
    only letters, digits and inner `-`, so any other run of characters becomes one `-`
    (`my_pipeline` is `warmrun-my-pipeline`)."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", deployment).strip("-")
    if not name:
        raise ValueError(f"deployment {deployment!r} has no letter or digit to name an endpoint")
    return NEXUS_ENDPOINT_PREFIX + name


def run_summary(pipeline_name: str, run_name: str | None) -> str:
    """How the Temporal UI names a run (its workflow's and its activity's summary)."""
    return f"{pipeline_name}: {run_name}" if run_name else pipeline_name


def runs_query(task_queue: str, status: RunStatus | None = None) -> str:
    """The visibility query of a deployment's runs, optionally of one status. Visibility
    cannot tell queued from running nor a timeout from a failure: readers check."""
    query = f"TaskQueue = '{task_queue}' AND WorkflowType = '{WORKFLOW_TYPE}'"
    if status is None:
        return query
    if not status.is_terminal:
        return f"{query} AND ExecutionStatus = 'Running'"
    closed = [name for name, statuses in CLOSED_AS.items() if status in statuses]
    either = " OR ".join(f"ExecutionStatus = '{name}'" for name in closed)
    return f"{query} AND ({either})"


def webhook_delivery_summary(run_id: str, event: str) -> str:
    """How the Temporal UI names one webhook delivery of a run."""
    return f"webhook {event} of run {run_id}"


def temporal_ui_url(ui_base: str, namespace: str, workflow_id: str) -> str:
    """Where the Temporal UI shows a workflow (a run, or one of its deliveries)."""
    return f"{ui_base.rstrip('/')}/namespaces/{namespace}/workflows/{workflow_id}"


def webhook_delivery_id(run_id: str, event: str, sequence: int | None = None) -> str:
    """Workflow ID of one event's delivery: stable, so a retry never sends it twice."""
    suffix = f".{sequence}" if sequence is not None else ""
    return f"{run_id}.webhook.{event}{suffix}"


# --- what the workflow takes and returns --------------------------------------------


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

    def budget(self, timeout: float | None) -> float:
        """The run's time budget in seconds: what it asked, within the maximum."""
        if timeout is None or timeout <= 0:
            return self.default_timeout
        return min(timeout, self.max_timeout)


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
class GetRunInput:
    """Input of the Nexus `get` operation: which run of the deployment to read."""

    run_id: str


@dataclass
class Progress:
    """Where a run is; sent as activity heartbeat details so the server holds it."""

    step: str | None = None
    steps_completed: int = 0
    steps_total: int | None = None
    fraction: float | None = None
    message: str | None = None

    @classmethod
    def from_json(cls, value: Any) -> "Progress | None":
        """Progress from decoded JSON (fields it does not know are dropped)."""
        return cls(**_known_fields(cls, value)) if isinstance(value, dict) else None


@dataclass
class PipelineRunResult:
    """Output of the `PipelineRun` workflow; `outputs` is the pipeline's JSON object."""

    outputs: dict[str, Any]
    run_name: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    execution_time: float | None = None
    """Seconds from the run's creation (the workflow's start) to `finished_at`, the span
    the HTTP answer's `execution_time` measures; `started_at` is when its pipeline began."""
    progress: Progress = field(default_factory=Progress)


# --- what the run_pipeline activity takes, reports and returns -----------------------


@dataclass
class RunPipelineInput:
    """Input of the `run_pipeline` activity."""

    parameters: dict[str, Any]
    run_name: str | None = None
    callback_url: str | None = None
    callback_events: list[str] | None = None
    deadline: str | None = None
    """When the run times out (RFC 3339): a stop asked after it is the timeout's."""


@dataclass
class StepCheckpoint:
    """A completed `ctx.step(name, fn)`: its JSON result survives a lost worker."""

    name: str
    result: Any = None
    saved: bool = True
    """False when the result was too large to checkpoint: the step runs again on resume."""


def checkpoints_from_heartbeat(details: Sequence[Any]) -> list[StepCheckpoint]:
    """The steps a lost attempt completed, from its last heartbeat: the details are
    `[progress, [checkpoint, ...]]`."""
    if len(details) < 2 or not isinstance(details[1], list):
        return []
    return [
        StepCheckpoint(**_known_fields(StepCheckpoint, saved))
        for saved in details[1]
        if isinstance(saved, dict) and "name" in saved
    ]


@dataclass
class PipelineOutcome:
    """What the `run_pipeline` activity returns on success."""

    outputs: dict[str, Any]
    started_at: str
    finished_at: str
    progress: Progress = field(default_factory=Progress)
    attempt: int = 0
    outputs_bytes: int | None = None
    """The outputs' size as compact JSON, measured where they were made."""
    steps: list[str] = field(default_factory=list)
    """The names of the last `MAX_OUTCOME_STEPS` steps completed, in order (the run's
    history keeps them; its memo does not): an event stream names from them the steps
    its poller missed."""


MAX_OUTCOME_STEPS = 200


def step_names(completed: Sequence[str], steps_completed: int | None = None) -> dict[int, str]:
    """Each completed step's position (its `steps_completed` when it began) and name,
    given the last names of `steps_completed` steps (all of them when not given)."""
    first = (len(completed) if steps_completed is None else steps_completed) - len(completed)
    return {first + index: name for index, name in enumerate(completed)}


@dataclass
class FailureDetails:
    """What a pipeline's error carries besides its type and message: when the failed
    attempt started, which it was and how far it got. The activity attaches it as the
    error's first detail; the workflow passes it on in the run's failure."""

    started_at: str
    attempt: int = 0
    progress: Progress = field(default_factory=Progress)

    @classmethod
    def from_details(cls, details: Sequence[Any]) -> "FailureDetails | None":
        """The details of a failure decoded from Temporal (None: not a pipeline's)."""
        first = details[0] if details else None
        if not isinstance(first, dict) or not first.get("started_at"):
            return None
        return cls(
            started_at=str(first["started_at"]),
            attempt=int(first.get("attempt") or 0),
            progress=Progress.from_json(first.get("progress")) or Progress(),
        )


# --- the ZenML pipeline run a run is ---------------------------------------------------


@dataclass
class ZenMLRunLink:
    """The ZenML pipeline run that a run of a ZenML pipeline is (`warmrun.zenml`).

    ZenML chooses its runs' ids, so the two ids are linked both ways: the ZenML run's
    `orchestrator_run_id` (and its `warmrun_run_id` run metadata) is the warmrun run_id,
    and this link, in the run's memo, names the ZenML run. After a lost worker whose
    step could not be retried in place, the run continues in a ZenML *replay* of the
    first ZenML run (`original_run_id`); the link then names the replay.
    """

    run_id: str
    """ZenML's id (a UUID) of the pipeline run."""
    run_name: str | None = None
    run_index: int | None = None
    snapshot_id: str | None = None
    """The snapshot the deployment serves (ZenML's `metadata.snapshot_id`)."""
    snapshot_name: str | None = None
    run_snapshot_id: str | None = None
    """The per-run snapshot holding this run's parameters."""
    deployment_id: str | None = None
    """The ZenML deployment served, for `warmrun serve zenml:DEPLOYMENT`."""
    deployment_name: str | None = None
    original_run_id: str | None = None
    """The ZenML run this one replays after a lost worker."""

    @classmethod
    def from_json(cls, value: Any) -> "ZenMLRunLink | None":
        if not isinstance(value, dict) or not isinstance(value.get("run_id"), str):
            return None
        return cls(**_known_fields(cls, value))


@dataclass
class CloseZenMLRunInput:
    """Input of the `close_zenml_run` activity: finish a ZenML run warmrun gave up on."""

    zenml_run_id: str
    status: RunStatus
    """How the warmrun run ended (failed, cancelled or timed_out)."""
    reason: str


# --- how a run ended, and its memo ----------------------------------------------------

ENDING_MEMO_KEY = "outcome"
ZENML_RUN_MEMO_KEY = "zenml_run"
ENDING_MEMO_MAX_BYTES = 1536
"""A `RunEnding` is kept under Temporal's memo warning size (2 KiB by default): larger
outputs or error messages stay in history only."""


@dataclass
class RunError:
    """Why a run failed or timed out: the exception type (or warmrun's reason) and text."""

    type: str
    message: str


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

    status: RunStatus
    """succeeded, failed, cancelled or timed_out."""
    complete: bool = False
    started_at: str | None = None
    attempt: int = 0
    progress: Progress | None = None
    outputs: dict[str, Any] | None = None
    error: RunError | None = None
    result_in_history: bool = False
    """The outputs or the error message were too large to be here: see the close event."""

    @classmethod
    def of_failure(cls, status: RunStatus, error: RunError, details: Sequence[Any]) -> "RunEnding":
        """The ending of a run whose pipeline failed: complete when the failure's
        details say when the pipeline started."""
        ending = cls(status, error=error)
        if failure := FailureDetails.from_details(details):
            ending.complete = True
            ending.started_at = failure.started_at
            ending.attempt = failure.attempt
            ending.progress = failure.progress
        return ending

    def fitted(self, outputs_bytes: int | None = None) -> "RunEnding":
        """This ending within the memo's size: outputs, then the error's message, are
        left to the close event when they would overflow it. `outputs_bytes`, the
        outputs' size as compact JSON when the caller knows it, spares encoding large
        outputs once more only to find them too large."""
        if self.outputs is not None and (
            (outputs_bytes is not None and outputs_bytes > ENDING_MEMO_MAX_BYTES)
            or self._size() > ENDING_MEMO_MAX_BYTES
        ):
            self.outputs, self.result_in_history = None, True
        if self.error is not None and self._size() > ENDING_MEMO_MAX_BYTES:
            self.error = RunError(type=self.error.type, message="")
            self.result_in_history = True
        return self

    def to_memo(self) -> dict[str, Any]:
        return {ENDING_MEMO_KEY: asdict(self)}

    @classmethod
    def from_memo(cls, memo: Mapping[str, Any], closed_as: str | None) -> "RunEnding | None":
        """The ending the workflow recorded, if Temporal agrees the run ended that way
        (`closed_as`: the workflow's close status as visibility names it). A run
        terminated after its workflow wrote it, or an unreadable record, gives None."""
        recorded = memo.get(ENDING_MEMO_KEY)
        if not isinstance(recorded, dict) or closed_as is None:
            return None
        try:
            status = RunStatus(recorded.get("status"))
        except ValueError:
            return None
        if status not in CLOSED_AS.get(closed_as, ()):
            return None
        error = recorded.get("error")
        outputs = recorded.get("outputs")
        return cls(
            status=status,
            complete=bool(recorded.get("complete")),
            started_at=recorded.get("started_at"),
            attempt=int(recorded.get("attempt") or 0),
            progress=Progress.from_json(recorded.get("progress")),
            outputs=outputs if isinstance(outputs, dict) else None,
            error=RunError(
                type=str(error.get("type") or "ApplicationError"),
                message=str(error.get("message") or ""),
            )
            if isinstance(error, dict)
            else None,
            result_in_history=bool(recorded.get("result_in_history")),
        )

    def _size(self) -> int:
        return len(json.dumps(asdict(self), separators=(",", ":")).encode())


@dataclass
class RunMemo:
    """What a run's memo says of it, under public keys: written when the run starts
    (by warmrun's API, or by the workflow for a run another client started), and
    completed by its `RunEnding` when it closes."""

    pipeline_name: str
    run_name: str | None = None
    callback_url: str | None = None
    callback_events: list[str] | None = None
    request_fingerprint: str | None = None
    """Of the request an Idempotency-Key started the run with (see services/idempotency)."""
    ending: RunEnding | None = None
    zenml_run: ZenMLRunLink | None = None
    """The ZenML pipeline run this run is (ZenML pipelines only), once it exists."""

    def to_memo(self) -> dict[str, Any]:
        memo: dict[str, Any] = {"pipeline_name": self.pipeline_name, "run_name": self.run_name}
        if self.callback_url:
            memo |= {"callback_url": self.callback_url, "callback_events": self.callback_events}
        if self.request_fingerprint:
            memo["request_fingerprint"] = self.request_fingerprint
        if self.ending is not None:
            memo |= self.ending.to_memo()
        if self.zenml_run is not None:
            memo |= zenml_run_memo(self.zenml_run)
        return memo

    @classmethod
    def from_memo(cls, memo: Mapping[str, Any], closed_as: str | None = None) -> "RunMemo":
        """Read a decoded memo; `closed_as` (a closed run's status) admits its ending."""
        events = memo.get("callback_events")
        return cls(
            pipeline_name=str(memo.get("pipeline_name") or ""),
            run_name=_str_or_none(memo.get("run_name")),
            callback_url=_str_or_none(memo.get("callback_url")),
            callback_events=[str(event) for event in events] if isinstance(events, list) else None,
            request_fingerprint=_str_or_none(memo.get("request_fingerprint")),
            ending=RunEnding.from_memo(memo, closed_as),
            zenml_run=ZenMLRunLink.from_json(memo.get(ZENML_RUN_MEMO_KEY)),
        )


def zenml_run_memo(link: ZenMLRunLink) -> dict[str, Any]:
    """The memo entry a workflow upserts when its ZenML run exists (or is replayed)."""
    return {ZENML_RUN_MEMO_KEY: asdict(link)}


# --- webhook deliveries ---------------------------------------------------------------


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
    """Output of a delivery that a receiver accepted."""

    delivered_at: str
    attempts: int
    status_code: int


@dataclass
class DeliveryFailureDetails:
    """The first detail of a delivery's final failure: how many attempts it took."""

    attempts: int = 0

    @classmethod
    def from_details(cls, details: Sequence[Any]) -> "DeliveryFailureDetails | None":
        first = details[0] if details else None
        if not isinstance(first, dict):
            return None
        return cls(attempts=int(first.get("attempts") or 0))


def run_payload(
    *,
    run_id: str,
    run_name: str | None,
    pipeline_name: str,
    task_queue: str,
    status: RunStatus,
    progress: Progress | None = None,
    created_at: str | None = None,
    started_at: str | None = None,
    finished_at: str | None = None,
    attempt: int | None = None,
    outputs: dict[str, Any] | None = None,
    error: RunError | None = None,
) -> dict[str, Any]:
    """A webhook body: the run resource as the worker sending it knows the run (the
    delivery adds `links` and `event`)."""
    return {
        "run_id": run_id,
        "run_name": run_name,
        "pipeline_name": pipeline_name,
        "deployment_name": deployment_of(task_queue),
        "status": status.value,
        "created_at": created_at,
        "started_at": started_at,
        "finished_at": finished_at,
        "attempt": attempt,
        "cancel_requested": status == RunStatus.CANCELLED,
        "progress": asdict(progress) if progress else None,
        "outputs": outputs,
        "error": asdict(error) if error else None,
    }


def _known_fields(cls: type, value: Mapping[str, Any]) -> dict[str, Any]:
    names = {item.name for item in fields(cls)}
    return {key: item for key, item in value.items() if key in names}


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
