"""Reading a run: Temporal's view of a workflow, translated into the run resource.

Everything comes from what the Temporal server holds: `describe()` (status, pending
activity, heartbeat details) while a run is open; once it is closed, the `RunEnding`
its workflow wrote into the memo (plus its close event for outputs too large for a
memo), or its history when that ending is incomplete. So a read is one Temporal call
in the common cases, no query is sent (status reads work while no worker is
running), and the API keeps no run table of its own. The version a run executes on
(`build_id`) is in the same description (`warmrun.versioning.run_version`).

Waiting for a run's end (a sync invocation) reads the same close event, so the
answer a caller waited for and the run resource read later say the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowHistoryEventFilterType,
)
from temporalio.exceptions import ApplicationError, TimeoutError
from temporalio.service import RPCError, RPCStatusCode

from warmrun.deployment import Deployment
from warmrun.resource import Run, RunLinks
from warmrun.run import (
    CLOSED_AS,
    MAX_RUN_ID_LENGTH,
    RUN_PIPELINE_ACTIVITY,
    TERMINATED_ERROR,
    TIMED_OUT_ERROR,
    WORKFLOW_TYPE,
    FailureDetails,
    PipelineOutcome,
    PipelineRunResult,
    Progress,
    RunError,
    RunMemo,
    RunStatus,
    ZenMLRunLink,
    checkpoints_from_heartbeat,
    step_names,
)
from warmrun.services.errors import RunNotFound
from warmrun.services.webhook_state import webhook_state
from warmrun.versioning import run_version

LARGE_PAYLOAD_BYTES = 64 * 1024
"""Payloads this large are decoded in a thread: the API shares its loop with the worker."""

CLOSED_STATUS_NAMES: dict[WorkflowExecutionStatus, str] = {
    WorkflowExecutionStatus.COMPLETED: "Completed",
    WorkflowExecutionStatus.FAILED: "Failed",
    WorkflowExecutionStatus.CANCELED: "Canceled",
    WorkflowExecutionStatus.TERMINATED: "Terminated",
    WorkflowExecutionStatus.TIMED_OUT: "TimedOut",
}
"""The SDK's close statuses as visibility names them (the keys of `run.CLOSED_AS`)."""

_STARTED_STATES = (
    PendingActivityState.PENDING_ACTIVITY_STATE_STARTED,
    PendingActivityState.PENDING_ACTIVITY_STATE_CANCEL_REQUESTED,
)

T = TypeVar("T")


def closed_as(status: WorkflowExecutionStatus | None) -> str | None:
    """A closed workflow's status as visibility names it; None while it is open."""
    return CLOSED_STATUS_NAMES.get(status) if status is not None else None


def status_when_closed(status: WorkflowExecutionStatus | None, memo: RunMemo) -> RunStatus:
    """A closed run's status: its recorded ending's, else what its close status reads as."""
    if memo.ending is not None:
        return memo.ending.status
    return CLOSED_AS.get(closed_as(status) or "", (RunStatus.FAILED,))[0]


def status_of(description: WorkflowExecutionDescription, memo: RunMemo) -> RunStatus:
    """The run's status as far as its description tells, without another read (an
    open run whose pipeline just ended still reads as queued here)."""
    if closed_as(description.status) is not None:
        return status_when_closed(description.status, memo)
    pending = _pending_pipeline(description)
    if pending is not None and pending.state in _STARTED_STATES:
        return RunStatus.RUNNING
    return RunStatus.QUEUED


async def describe_run(deployment: Deployment, run_id: str) -> WorkflowExecutionDescription:
    """Describe a run of this deployment; anything else is `RunNotFound`."""
    if not run_id or len(run_id) > MAX_RUN_ID_LENGTH:
        raise RunNotFound(run_id, deployment.name)
    try:
        description = await deployment.client.get_workflow_handle(run_id).describe()
    except RPCError as err:
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            raise RunNotFound(run_id, deployment.name) from None
        raise
    if (
        description.workflow_type != WORKFLOW_TYPE
        or description.task_queue != deployment.task_queue
    ):
        raise RunNotFound(run_id, deployment.name)
    return description


async def read_run(deployment: Deployment, run_id: str) -> Run:
    return await run_of(deployment, await describe_run(deployment, run_id))


@dataclass
class _Reading:
    """What a read has found of a run so far."""

    status: RunStatus = RunStatus.QUEUED
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempt: int = 0
    cancel_requested: bool = False
    progress: Progress | None = None
    outputs: dict[str, Any] | None = None
    error: RunError | None = None


async def run_of(deployment: Deployment, description: WorkflowExecutionDescription) -> Run:
    """The run resource of a described workflow of this deployment."""
    client = deployment.client
    closed = closed_as(description.status)
    memo = RunMemo.from_memo(await description.memo(), closed)
    reading = _Reading(
        cancel_requested=description.raw_description.workflow_extended_info.cancel_requested
    )
    handle = client.get_workflow_handle(description.id, run_id=description.run_id)
    if closed is None:
        reading.progress = Progress()
        pending = _pending_pipeline(description)
        if pending is not None:
            await _read_pending(client, pending, reading)
        else:
            await _read_open_history(client, handle, reading)
    else:
        reading.finished_at = description.close_time
        ending = memo.ending
        if ending is None or not ending.complete:
            await _read_history(client, handle, reading)
        else:
            reading.status = ending.status
            reading.started_at = _parse_time(ending.started_at)
            reading.attempt = ending.attempt
            reading.outputs = ending.outputs
            reading.progress = ending.progress
            reading.error = ending.error
            if ending.result_in_history:
                await _read_result(client, handle, reading)
    version = run_version(description.raw_description.workflow_execution_info.versioning_info)
    waiting_for = None
    if reading.status == RunStatus.QUEUED and version.pinned and version.build_id:
        waiting_for = f"a worker of build {version.build_id}, to which the run is pinned"
    webhook = None
    if memo.callback_url:
        webhook = await webhook_state(
            client, description.id, reading.status, memo.callback_url, memo.callback_events
        )
    return Run(
        run_id=description.id,
        run_name=memo.run_name,
        pipeline_name=deployment.pipeline.name,
        deployment_name=deployment.name,
        status=reading.status,
        created_at=description.start_time,
        started_at=reading.started_at,
        finished_at=reading.finished_at,
        attempt=reading.attempt,
        cancel_requested=reading.cancel_requested,
        progress=reading.progress,
        outputs=reading.outputs,
        error=reading.error,
        webhook=webhook,
        build_id=version.build_id,
        waiting_for=waiting_for,
        links=links_of(deployment, description.id),
        zenml_run_id=memo.zenml_run.run_id if memo.zenml_run else None,
    )


def links_of(deployment: Deployment, run_id: str) -> RunLinks:
    return RunLinks.of(run_id, deployment.temporal_ui_link(run_id))


def _pending_pipeline(description: WorkflowExecutionDescription) -> PendingActivityInfo | None:
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name == RUN_PIPELINE_ACTIVITY:
            return pending
    return None


async def _read_pending(client: Client, pending: PendingActivityInfo, reading: _Reading) -> None:
    """Status, attempt, start and progress from the pending `run_pipeline`."""
    reading.attempt = pending.attempt
    if pending.state in _STARTED_STATES:
        reading.status = RunStatus.RUNNING
        reading.started_at = _time(pending.last_started_time)
    if pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_CANCEL_REQUESTED:
        reading.cancel_requested = True
    if pending.heartbeat_details.payloads:
        # Plain JSON, the first detail only (the checkpoints follow it).
        [progress] = await _decode(client, pending.heartbeat_details.payloads[:1], None)
        reading.progress = Progress.from_json(progress) or Progress()


def _scan_pipeline_events(events: Sequence[HistoryEvent], reading: _Reading) -> bool:
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
                reading.started_at = _time(event.event_time)
                reading.attempt = started.attempt
    return reading.attempt > 0


async def _read_open_history(
    client: Client, handle: WorkflowHandle[Any, Any], reading: _Reading
) -> None:
    """An open run with no pending `run_pipeline` when described: either not scheduled
    yet (queued, which it stays if the history read just after shows it only
    scheduled) or already ended, the workflow closing it (running, for milliseconds)."""
    history = await handle.fetch_history()
    if _scan_pipeline_events(history.events, reading):
        reading.status = RunStatus.RUNNING
        outcome = await _pipeline_outcome(client, history.events)
        if outcome is not None:
            reading.progress = outcome.progress


async def _pipeline_outcome(
    client: Client, events: Sequence[HistoryEvent]
) -> PipelineOutcome | None:
    """What `run_pipeline` returned, if it completed (a ZenML run's closing activity
    returns no outcome)."""
    pipeline_activities = {
        event.event_id
        for event in events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and event.activity_task_scheduled_event_attributes.activity_type.name
        == RUN_PIPELINE_ACTIVITY
    }
    for event in events:
        completed = event.activity_task_completed_event_attributes
        if (
            event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
            and completed.scheduled_event_id in pipeline_activities
        ):
            [outcome] = await _decode(client, completed.result.payloads, PipelineOutcome)
            return outcome
    return None


async def completed_step_names(deployment: Deployment, run_id: str) -> dict[int, str]:
    """The completed steps of a run by position, as far as Temporal holds them: the
    checkpoints of its pipeline's last heartbeat while it runs, the names in its
    pipeline's outcome once that returned. For event streams, which have to name the
    steps their poller missed; a status read does not need them (and skips decoding
    the checkpoints, which may be large)."""
    description = await describe_run(deployment, run_id)
    client = deployment.client
    pending = _pending_pipeline(description)
    if pending is not None:
        details = await _decode(client, pending.heartbeat_details.payloads, None)
        return step_names([step.name for step in checkpoints_from_heartbeat(details)])
    handle = client.get_workflow_handle(description.id, run_id=description.run_id)
    outcome = await _pipeline_outcome(client, (await handle.fetch_history()).events)
    if outcome is None:
        return {}
    return step_names(outcome.steps, outcome.progress.steps_completed)


async def _read_history(
    client: Client, handle: WorkflowHandle[Any, Any], reading: _Reading
) -> None:
    """Fill a closed run's outcome, start time and attempt from its history."""
    history = await handle.fetch_history()
    _scan_pipeline_events(history.events, reading)
    if history.events:
        _apply_end(await run_end(client, history.events[-1]), reading)


async def _read_result(client: Client, handle: WorkflowHandle[Any, Any], reading: _Reading) -> None:
    """Outputs or an error too large for the memo, from the close event alone (the
    server sends one event instead of the whole history)."""
    history = await handle.fetch_history(
        event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT
    )
    if history.events:
        _apply_end(await run_end(client, history.events[-1]), reading)


def _apply_end(end: RunEnd, reading: _Reading) -> None:
    reading.status = end.status
    reading.outputs = end.outputs
    reading.error = end.error
    reading.progress = end.progress


# --- the close event: read by status reads and by callers waiting for the end --------


@dataclass
class RunEnd:
    """How a run's workflow closed, from its close event."""

    status: RunStatus
    finished_at: datetime | None
    outputs: dict[str, Any] | None = None
    error: RunError | None = None
    progress: Progress | None = None


async def run_end(client: Client, close: HistoryEvent) -> RunEnd:
    """Decode a workflow's close event into how the run ended."""
    finished_at = _time(close.event_time)
    kind = close.event_type
    if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
        payloads = close.workflow_execution_completed_event_attributes.result.payloads
        [result] = await _decode(client, payloads, PipelineRunResult)
        return RunEnd(
            RunStatus.SUCCEEDED, finished_at, outputs=result.outputs, progress=result.progress
        )
    if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
        failure = await client.data_converter.decode_failure(
            close.workflow_execution_failed_event_attributes.failure
        )
        status, error = failure_ending(failure)
        details = failure.details if isinstance(failure, ApplicationError) else ()
        failed = FailureDetails.from_details(details)
        return RunEnd(status, finished_at, error=error, progress=failed and failed.progress)
    if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED:
        return RunEnd(RunStatus.CANCELLED, finished_at)
    if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
        error = RunError(type=TIMED_OUT_ERROR, message="the run exceeded its time budget")
        return RunEnd(RunStatus.TIMED_OUT, finished_at, error=error)
    if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
        reason = close.workflow_execution_terminated_event_attributes.reason
        error = RunError(type=TERMINATED_ERROR, message=reason or "terminated")
        return RunEnd(RunStatus.FAILED, finished_at, error=error)
    raise ValueError(f"not a close event of a run: {EventType.Name(kind)}")


def failure_ending(failure: BaseException) -> tuple[RunStatus, RunError]:
    """How a run ended, from the failure its workflow closed with."""
    if isinstance(failure, ApplicationError):
        if failure.type == TIMED_OUT_ERROR:
            return RunStatus.TIMED_OUT, RunError(type=TIMED_OUT_ERROR, message=failure.message)
        return RunStatus.FAILED, RunError(
            type=failure.type or "ApplicationError", message=failure.message
        )
    if isinstance(failure, TimeoutError):
        return RunStatus.TIMED_OUT, RunError(
            type=TIMED_OUT_ERROR, message="the run exceeded its time budget"
        )
    return RunStatus.FAILED, RunError(type=type(failure).__name__, message=str(failure))


async def zenml_run_of(client: Client, run_id: str) -> ZenMLRunLink | None:
    """The ZenML pipeline run a run of a ZenML pipeline is, from its memo."""
    description = await client.get_workflow_handle(run_id).describe()
    return RunMemo.from_memo(await description.memo()).zenml_run


async def wait_for_end(client: Client, run_id: str, workflow_run_id: str | None) -> RunEnd:
    """Wait for the run to close (a long poll on its close event, as the SDK's
    `result()` does) and say how it ended."""
    handle = client.get_workflow_handle(run_id, run_id=workflow_run_id)
    async for event in handle.fetch_history_events(
        wait_new_event=True,
        event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT,
        skip_archival=True,
    ):
        return await run_end(client, event)
    raise RuntimeError(f"the history of run {run_id} ended without a close event")


async def wait_until_closed(client: Client, run_id: str) -> None:
    """Return once the run's workflow has closed: the same long poll, without decoding
    the outcome (an event stream's poller only needs to know it is time to read)."""
    handle = client.get_workflow_handle(run_id)
    async for _ in handle.fetch_history_events(
        wait_new_event=True,
        event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT,
        skip_archival=True,
    ):
        return


async def start_time(client: Client, run_id: str, workflow_run_id: str | None) -> datetime | None:
    """When Temporal started the run's workflow (its first event), the `created_at`
    that status reads show."""
    handle = client.get_workflow_handle(run_id, run_id=workflow_run_id)
    async for event in handle.fetch_history_events(page_size=1):
        return _time(event.event_time)
    return None


async def _decode(client: Client, payloads: Sequence[Payload], type_hint: type[T] | None) -> list:
    """Decode payloads; large ones in a thread, so that the loop the API shares with
    the worker is not held for tens of milliseconds."""
    hints = [type_hint] if type_hint is not None else None
    if sum(payload.ByteSize() for payload in payloads) < LARGE_PAYLOAD_BYTES:
        return await client.data_converter.decode(payloads, hints)
    converter = client.data_converter
    if converter.payload_codec is not None:
        payloads = await converter.payload_codec.decode(payloads)
    return await asyncio.to_thread(converter.payload_converter.from_payloads, payloads, hints)


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _time(timestamp: Timestamp) -> datetime | None:
    if not timestamp.seconds and not timestamp.nanos:
        return None
    return timestamp.ToDatetime(tzinfo=UTC)
