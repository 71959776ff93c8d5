"""The wire contract of a run: what `PipelineRun` takes, returns and reports.

These dataclasses are the public, versioned JSON shapes that any Temporal client
(Python or not) sees. Fields are only ever added, with defaults, so an older caller's
JSON keeps decoding. Unknown JSON fields are ignored by Temporal's converter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

WORKFLOW_TYPE = "PipelineRun"
RUN_PIPELINE_ACTIVITY = "run_pipeline"
RUN_POLICY_ACTIVITY = "resolve_run_policy"
TASK_QUEUE_PREFIX = "warmrun-"

# Failure types the workflow reports, so callers can tell a run's end apart
# without parsing messages.
TIMED_OUT_ERROR = "RunTimedOut"
INVALID_PARAMETERS_ERROR = "InvalidParameters"
INVALID_OUTPUTS_ERROR = "InvalidOutputs"
WORKER_LOST_ERROR = "WorkerLost"


def task_queue_for(deployment: str) -> str:
    """The task queue every replica of a deployment polls."""
    return f"{TASK_QUEUE_PREFIX}{deployment}"


@dataclass
class PipelineRunInput:
    """Input of the `PipelineRun` workflow; only `parameters` is required."""

    parameters: dict[str, Any] = field(default_factory=dict)
    run_name: str | None = None
    timeout: float | None = None
    """Seconds from acceptance (workflow start) before the run ends as timed out."""
    callback_url: str | None = None
    callback_events: list[str] | None = None


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
class RunPolicy:
    """The deployment's settings that shape a run, read by the workflow once per run.

    They come from a local activity so that the worker's configuration applies to runs
    started by any client, and are recorded in history so replays stay deterministic.
    """

    pipeline_name: str = ""
    heartbeat_timeout: float = 30.0
    default_timeout: float = 3600.0
    max_timeout: float = 86400.0
    max_attempts: int = 5
    """Attempts of `run_pipeline` when its worker is lost (infrastructure retries)."""
    cancel_grace: float = 60.0
    """Seconds a cancelled or timed-out pipeline gets to stop before Temporal gives up."""


@dataclass
class RunPipelineInput:
    """Input of the `run_pipeline` activity."""

    parameters: dict[str, Any]
    run_name: str | None = None
