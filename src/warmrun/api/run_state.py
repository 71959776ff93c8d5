"""Translate Temporal's view of a workflow into the run resource.

Everything comes from what the Temporal server holds: `describe()` (status, pending
activity, heartbeat details) while a run is open, its history once it is closed. No
query is sent, so status reads work while no worker is running, and the API keeps no
run table of its own.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
)
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    TerminatedError,
    TimeoutError,
)
from temporalio.service import RPCError, RPCStatusCode

from warmrun.api.dependencies import Deployment
from warmrun.api.models import RunError, RunLinks, RunProgress, RunResource, RunStatus
from warmrun.workflows.contract import (
    RUN_PIPELINE_ACTIVITY,
    TIMED_OUT_ERROR,
    WORKFLOW_TYPE,
    PipelineRunResult,
    Progress,
)

MAX_RUN_ID_LENGTH = 1000  # Temporal's workflow ID limit

_CLOSED_STATUS: dict[WorkflowExecutionStatus, RunStatus] = {
    WorkflowExecutionStatus.COMPLETED: "succeeded",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.CANCELED: "cancelled",
    WorkflowExecutionStatus.TERMINATED: "failed",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
}
_STARTED_STATES = (
    PendingActivityState.PENDING_ACTIVITY_STATE_STARTED,
    PendingActivityState.PENDING_ACTIVITY_STATE_CANCEL_REQUESTED,
)


class RunNotFound(Exception):
    """No run of this deployment has that id."""


def run_ending(failure: BaseException | None) -> tuple[RunStatus, RunError | None]:
    """How a run ended, from the exception its workflow closed with (None: success)."""
    if failure is None:
        return "succeeded", None
    if isinstance(failure, CancelledError):
        return "cancelled", None
    if isinstance(failure, TimeoutError):
        return "timed_out", RunError(
            type=TIMED_OUT_ERROR, message="the run exceeded its time budget"
        )
    if isinstance(failure, ApplicationError) and failure.type == TIMED_OUT_ERROR:
        return "timed_out", RunError(type=TIMED_OUT_ERROR, message=failure.message)
    if isinstance(failure, TerminatedError):
        return "failed", RunError(type="Terminated", message=failure.message or "terminated")
    if isinstance(failure, ApplicationError):
        return "failed", RunError(type=failure.type or "ApplicationError", message=failure.message)
    return "failed", RunError(type=type(failure).__name__, message=str(failure))


async def describe_run(deployment: Deployment, run_id: str) -> WorkflowExecutionDescription:
    """Describe a run of this deployment; anything else is `RunNotFound`."""
    if not run_id or len(run_id) > MAX_RUN_ID_LENGTH:
        raise RunNotFound(run_id)
    try:
        description = await deployment.client.get_workflow_handle(run_id).describe()
    except RPCError as err:
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            raise RunNotFound(run_id) from None
        raise
    if (
        description.workflow_type != WORKFLOW_TYPE
        or description.task_queue != deployment.task_queue
    ):
        raise RunNotFound(run_id)
    return description


async def read_run(deployment: Deployment, run_id: str) -> RunResource:
    description = await describe_run(deployment, run_id)
    return await run_resource(deployment, description)


async def run_resource(
    deployment: Deployment, description: WorkflowExecutionDescription
) -> RunResource:
    client = deployment.client
    run_id = description.id
    memo = await description.memo()
    resource = RunResource(
        run_id=run_id,
        run_name=memo.get("run_name"),
        pipeline_name=deployment.pipeline.name,
        deployment_name=deployment.name,
        status="queued",
        created_at=description.start_time,
        cancel_requested=description.raw_description.workflow_extended_info.cancel_requested,
        links=RunLinks(
            self=f"/runs/{run_id}",
            cancel=f"/runs/{run_id}",
            temporal_ui=deployment.temporal_ui_link(run_id),
        ),
    )
    closed_as = _CLOSED_STATUS.get(description.status) if description.status else None
    if closed_as is None:
        _read_pending_activity(description, resource)
        if resource.progress is None:
            resource.progress = RunProgress()
        await _decode_progress(client, description, resource)
        return resource
    resource.finished_at = description.close_time
    handle = client.get_workflow_handle(run_id, run_id=description.run_id)
    await _read_history(client, handle, resource)
    return resource


def _read_pending_activity(
    description: WorkflowExecutionDescription, resource: RunResource
) -> None:
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name != RUN_PIPELINE_ACTIVITY:
            continue
        resource.attempt = pending.attempt
        if pending.state in _STARTED_STATES:
            resource.status = "running"
            resource.started_at = _time(pending.last_started_time)
        if pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_CANCEL_REQUESTED:
            resource.cancel_requested = True


async def _decode_progress(
    client: Client, description: WorkflowExecutionDescription, resource: RunResource
) -> None:
    for pending in description.raw_description.pending_activities:
        if (
            pending.activity_type.name == RUN_PIPELINE_ACTIVITY
            and pending.heartbeat_details.payloads
        ):
            first = pending.heartbeat_details.payloads[0]
            [progress] = await client.data_converter.decode([first], [Progress])
            resource.progress = RunProgress(**asdict(progress))


async def _read_history(
    client: Client, handle: WorkflowHandle[Any, Any], resource: RunResource
) -> None:
    """Fill a closed run's outcome, start time and attempt from its history."""
    history = await handle.fetch_history()
    pipeline_activities: set[int] = set()
    close: HistoryEvent | None = None
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if (
                event.activity_task_scheduled_event_attributes.activity_type.name
                == RUN_PIPELINE_ACTIVITY
            ):
                pipeline_activities.add(event.event_id)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            if started.scheduled_event_id in pipeline_activities:
                resource.started_at = _time(event.event_time)
                resource.attempt = started.attempt
        close = event

    failure: BaseException | None = None
    if close is None:
        failure = None
    elif close.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
        payloads = close.workflow_execution_completed_event_attributes.result.payloads
        [result] = await client.data_converter.decode(payloads, [PipelineRunResult])
        resource.outputs = result.outputs
        resource.progress = RunProgress(**asdict(result.progress))
    elif close.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
        failure = await client.data_converter.decode_failure(
            close.workflow_execution_failed_event_attributes.failure
        )
        resource.progress = _progress_from_failure(failure)
    elif close.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED:
        failure = CancelledError("cancelled")
    elif close.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
        failure = TimeoutError("timed out", type=None, last_heartbeat_details=[])
    elif close.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
        failure = TerminatedError(close.workflow_execution_terminated_event_attributes.reason)
    resource.status, resource.error = run_ending(failure)


def _progress_from_failure(failure: BaseException) -> RunProgress | None:
    """A failed pipeline's last progress travels in its error's details."""
    if isinstance(failure, ApplicationError) and failure.details:
        detail = failure.details[0]
        if isinstance(detail, dict) and isinstance(detail.get("progress"), dict):
            return RunProgress.model_validate(detail["progress"])
    return None


def _time(timestamp: Timestamp) -> datetime | None:
    if not timestamp.seconds and not timestamp.nanos:
        return None
    return timestamp.ToDatetime(tzinfo=UTC)
