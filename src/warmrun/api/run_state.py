"""Translate Temporal's view of a workflow into the run resource.

Everything comes from what the Temporal server holds: `describe()` (status, pending
activity, heartbeat details) while a run is open; once it is closed, the `RunEnding`
its workflow wrote into the memo (plus its close event for outputs too large for a
memo), or its history when that ending is incomplete. So a read is one Temporal call
in the common cases, no query is sent (status reads work while no worker is
running), and the API keeps no run table of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowHistoryEventFilterType,
)
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    TerminatedError,
    TimeoutError,
)
from temporalio.service import RPCError, RPCStatusCode

from warmrun.api.dependencies import Deployment
from warmrun.api.models import (
    RunError,
    RunLinks,
    RunProgress,
    RunResource,
    RunStatus,
    WebhookState,
)
from warmrun.workflows.contract import (
    OUTCOME_MEMO,
    RUN_PIPELINE_ACTIVITY,
    TERMINAL_EVENTS,
    TIMED_OUT_ERROR,
    WEBHOOK_GONE_ERROR,
    WEBHOOK_REFUSED_ERROR,
    WEBHOOK_REJECTED_ERROR,
    WORKFLOW_TYPE,
    PipelineOutcome,
    PipelineRunResult,
    webhook_delivery_id,
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
        links=_links(deployment, run_id),
    )
    closed_as = _CLOSED_STATUS.get(description.status) if description.status else None
    if closed_as is None:
        resource.progress = RunProgress()
        if _read_pending_activity(description, resource):
            await _decode_progress(client, description, resource)
        else:
            handle = client.get_workflow_handle(run_id, run_id=description.run_id)
            await _read_open_history(client, handle, resource)
    else:
        resource.finished_at = description.close_time
        ending = _recorded_ending(memo, description.status)
        handle = client.get_workflow_handle(run_id, run_id=description.run_id)
        if ending is None or not ending.get("complete"):
            await _read_history(client, handle, resource)
        else:
            _apply_ending(ending, resource)
            if ending.get("result_in_history"):
                await _read_result(client, handle, resource)
    if memo.get("callback_url"):
        resource.webhook = await _webhook_state(
            client, resource, memo["callback_url"], memo.get("callback_events")
        )
    return resource


_ENDINGS_OF: dict[WorkflowExecutionStatus, tuple[RunStatus, ...]] = {
    WorkflowExecutionStatus.COMPLETED: ("succeeded",),
    WorkflowExecutionStatus.FAILED: ("failed", "timed_out"),
    WorkflowExecutionStatus.CANCELED: ("cancelled",),
}


def _recorded_ending(
    memo: dict[str, Any], status: WorkflowExecutionStatus | None
) -> dict[str, Any] | None:
    """The `RunEnding` the workflow wrote as it closed, if Temporal agrees the run
    ended that way (one terminated after its workflow wrote it did not)."""
    ending = memo.get(OUTCOME_MEMO)
    if not isinstance(ending, dict) or status is None:
        return None
    if ending.get("status") not in _ENDINGS_OF.get(status, ()):
        return None
    return ending


def _apply_ending(ending: dict[str, Any], resource: RunResource) -> None:
    resource.status = ending["status"]
    resource.started_at = _parse_time(ending.get("started_at"))
    resource.attempt = ending.get("attempt") or 0
    resource.outputs = ending.get("outputs")
    if progress := ending.get("progress"):
        resource.progress = RunProgress.model_validate(progress)
    if error := ending.get("error"):
        resource.error = RunError(
            type=error.get("type") or "ApplicationError", message=error.get("message", "")
        )


_WEBHOOK_FAILURE_STATES = {
    WEBHOOK_GONE_ERROR: "gone",
    WEBHOOK_REJECTED_ERROR: "rejected",
    WEBHOOK_REFUSED_ERROR: "refused",
}


async def _webhook_state(
    client: Client, run: RunResource, url: str, events: list[str] | None
) -> WebhookState:
    """The delivery of the run's main event, read from its delivery workflow."""
    wanted = events or list(TERMINAL_EVENTS)
    if run.is_terminal and run.status in wanted:
        event: str | None = run.status
    elif "started" in wanted:
        event = "started"
    else:
        event = None
    state = WebhookState(url=url, event=event, state="pending")
    if event is None:
        return state
    handle = client.get_workflow_handle(webhook_delivery_id(run.run_id, event))
    try:
        delivery = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return state  # not handed over yet
        raise
    if delivery.status == WorkflowExecutionStatus.RUNNING:
        for pending in delivery.raw_description.pending_activities:
            started = pending.state in _STARTED_STATES
            state.attempts = pending.attempt - (0 if started else 1)
            state.last_error = pending.last_failure.message or None
            state.state = "retrying" if state.last_error else "delivering"
        return state
    try:
        result = await handle.result()
    except WorkflowFailureError as err:
        cause = err.cause
        state.state = "failed"
        state.last_error = str(cause) if cause else str(err)
        if isinstance(cause, ApplicationError):
            state.state = _WEBHOOK_FAILURE_STATES.get(cause.type or "", "failed")
            state.last_error = cause.message
            if cause.details and isinstance(cause.details[0], dict):
                state.attempts = int(cause.details[0].get("attempts", 0))
        return state
    state.state = "delivered"
    state.attempts = result["attempts"]
    state.delivered_at = datetime.fromisoformat(result["delivered_at"])
    return state


def _links(deployment: Deployment, run_id: str) -> RunLinks:
    return RunLinks(
        self=f"/runs/{run_id}",
        cancel=f"/runs/{run_id}",
        events=f"/runs/{run_id}/events",
        temporal_ui=deployment.temporal_ui_link(run_id),
    )


def _read_pending_activity(
    description: WorkflowExecutionDescription, resource: RunResource
) -> bool:
    """Status, attempt and start from the pending `run_pipeline`; False if none."""
    found = False
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name != RUN_PIPELINE_ACTIVITY:
            continue
        found = True
        resource.attempt = pending.attempt
        if pending.state in _STARTED_STATES:
            resource.status = "running"
            resource.started_at = _time(pending.last_started_time)
        if pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_CANCEL_REQUESTED:
            resource.cancel_requested = True
    return found


async def _decode_progress(
    client: Client, description: WorkflowExecutionDescription, resource: RunResource
) -> None:
    for pending in description.raw_description.pending_activities:
        if (
            pending.activity_type.name == RUN_PIPELINE_ACTIVITY
            and pending.heartbeat_details.payloads
        ):
            # Decoded as plain JSON: pydantic validates it once, with no dataclass between.
            [progress] = await client.data_converter.decode(pending.heartbeat_details.payloads[:1])
            resource.progress = RunProgress.model_validate(progress)


def _scan_pipeline_events(events: Sequence[HistoryEvent], resource: RunResource) -> bool:
    """Fill start time and attempt from the `run_pipeline` events; True if an attempt
    ended (Temporal writes an activity's start event only when the attempt ends)."""
    pipeline_activities: set[int] = set()
    for event in events:
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
    return resource.attempt > 0


async def _read_open_history(
    client: Client, handle: WorkflowHandle[Any, Any], resource: RunResource
) -> None:
    """An open run with no pending `run_pipeline` when described: either not scheduled
    yet (queued, which it stays if the history read just after shows it only
    scheduled) or already ended, the workflow closing it (running, for milliseconds)."""
    history = await handle.fetch_history()
    if _scan_pipeline_events(history.events, resource):
        resource.status = "running"
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                payloads = event.activity_task_completed_event_attributes.result.payloads
                [outcome] = await client.data_converter.decode(payloads, [PipelineOutcome])
                resource.progress = RunProgress(**asdict(outcome.progress))


async def _read_history(
    client: Client, handle: WorkflowHandle[Any, Any], resource: RunResource
) -> None:
    """Fill a closed run's outcome, start time and attempt from its history."""
    history = await handle.fetch_history()
    _scan_pipeline_events(history.events, resource)
    await _read_close_event(client, history.events[-1] if history.events else None, resource)


async def _read_result(
    client: Client, handle: WorkflowHandle[Any, Any], resource: RunResource
) -> None:
    """Outputs or an error too large for the memo, from the close event alone (the
    server sends one event instead of the whole history)."""
    history = await handle.fetch_history(
        event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT
    )
    await _read_close_event(client, history.events[-1] if history.events else None, resource)


async def _read_close_event(
    client: Client, close: HistoryEvent | None, resource: RunResource
) -> None:
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


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _time(timestamp: Timestamp) -> datetime | None:
    if not timestamp.seconds and not timestamp.nanos:
        return None
    return timestamp.ToDatetime(tzinfo=UTC)


_VISIBILITY_QUERY: dict[str, str] = {
    "queued": "ExecutionStatus = 'Running'",
    "running": "ExecutionStatus = 'Running'",
    "succeeded": "ExecutionStatus = 'Completed'",
    "cancelled": "ExecutionStatus = 'Canceled'",
    "failed": "(ExecutionStatus = 'Failed' OR ExecutionStatus = 'Terminated')",
    "timed_out": "(ExecutionStatus = 'Failed' OR ExecutionStatus = 'TimedOut')",
}


@dataclass
class RunPage:
    runs: list[RunResource]
    next_page_token: bytes | None


async def list_runs(
    deployment: Deployment, status: RunStatus | None, limit: int, page_token: bytes | None
) -> RunPage:
    """A page of this deployment's runs from Temporal visibility.

    Visibility cannot tell queued from running nor a timeout from a failure, so open
    runs are described and closed ones read their memo; a page filtered on such a
    status may therefore hold fewer than `limit` runs (follow `next_page_token`).
    """
    query = f"TaskQueue = '{deployment.task_queue}' AND WorkflowType = '{WORKFLOW_TYPE}'"
    if status:
        query += f" AND {_VISIBILITY_QUERY[status]}"
    executions = deployment.client.list_workflows(
        query, page_size=limit, next_page_token=page_token
    )
    await executions.fetch_next_page()
    page = list(executions.current_page or [])
    runs = await asyncio.gather(*(_listed(deployment, execution) for execution in page))
    return RunPage(
        runs=[run for run in runs if run is not None and (status is None or run.status == status)],
        next_page_token=executions.next_page_token or None,
    )


async def _listed(deployment: Deployment, execution: WorkflowExecution) -> RunResource | None:
    if execution.status == WorkflowExecutionStatus.RUNNING:
        try:
            description = await describe_run(deployment, execution.id)
        except RunNotFound:  # deleted meanwhile
            return None
        return await run_resource(deployment, description)
    memo = await execution.memo()
    closed_as = _CLOSED_STATUS.get(execution.status, "failed") if execution.status else "failed"
    if ending := _recorded_ending(memo, execution.status):
        closed_as = ending["status"]
    return RunResource(
        run_id=execution.id,
        run_name=memo.get("run_name"),
        pipeline_name=deployment.pipeline.name,
        deployment_name=deployment.name,
        status=closed_as,
        created_at=execution.start_time,
        finished_at=execution.close_time,
        links=_links(deployment, execution.id),
    )
