"""`PipelineRun`: the durable state machine of one run.

The workflow does no I/O: it takes the deployment's run policy from its input (or,
started by another client, asks its worker for it), runs the pipeline as one
heartbeating activity, and turns the activity's end into the run's end. Cancellation
waits for the pipeline to stop (WAIT_CANCELLATION_COMPLETED); the run's `timeout` is a
workflow timer that cancels the activity the same way, so `timed_out`, like
`cancelled`, is reported only once the code has stopped. A run with a `callback_url`
hands its terminal event to a webhook delivery workflow it abandons, so a slow
receiver never keeps the run open.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    TimeoutError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from warmrun.workflows.contract import (
        ENDING_MEMO_MAX_BYTES,
        OUTCOME_MEMO,
        RUN_PIPELINE_ACTIVITY,
        RUN_POLICY_ACTIVITY,
        TERMINAL_EVENTS,
        TIMED_OUT_ERROR,
        WEBHOOK_WORKFLOW_TYPE,
        WORKER_LOST_ERROR,
        WORKFLOW_TYPE,
        PipelineOutcome,
        PipelineRunInput,
        PipelineRunResult,
        Progress,
        RunEnding,
        RunPipelineInput,
        RunPolicy,
        WebhookDeliveryInput,
        run_payload,
        webhook_delivery_id,
    )


@workflow.defn(name=WORKFLOW_TYPE)
class PipelineRun:
    def __init__(self) -> None:
        self._timed_out = False
        self._deadline: str | None = None

    @workflow.run
    async def run(self, input: PipelineRunInput) -> PipelineRunResult:
        policy = input.policy or await workflow.execute_local_activity(
            RUN_POLICY_ACTIVITY,
            result_type=RunPolicy,
            start_to_close_timeout=timedelta(seconds=10),
        )
        memo: dict[str, Any] = {"pipeline_name": policy.pipeline_name, "run_name": input.run_name}
        if input.callback_url:
            memo |= {"callback_url": input.callback_url, "callback_events": input.callback_events}
        # Runs started through the API carry this memo already; others get it here.
        if any(workflow.memo_value(key, None) != value for key, value in memo.items()):
            workflow.upsert_memo(memo)
        budget = _budget(input.timeout, policy)
        deadline = workflow.info().workflow_start_time + timedelta(seconds=budget)
        self._deadline = deadline.isoformat()
        remaining = max((deadline - workflow.now()).total_seconds(), 0.0)
        workflow.set_current_details(
            f"Pipeline `{policy.pipeline_name}` runs as the `{RUN_PIPELINE_ACTIVITY}` activity; "
            "its heartbeat details show the current step and progress.\n\n"
            f"Times out at {self._deadline} ({budget:g} s budget)."
        )

        pipeline = workflow.start_activity(
            RUN_PIPELINE_ACTIVITY,
            RunPipelineInput(
                parameters=input.parameters,
                run_name=input.run_name,
                callback_url=input.callback_url,
                callback_events=input.callback_events,
            ),
            result_type=PipelineOutcome,
            schedule_to_close_timeout=timedelta(seconds=remaining + policy.cancel_grace),
            heartbeat_timeout=timedelta(seconds=policy.heartbeat_timeout),
            retry_policy=RetryPolicy(maximum_attempts=policy.max_attempts),
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=_summary(policy.pipeline_name, input.run_name),
        )
        deadline_timer = asyncio.create_task(self._cancel_at_deadline(pipeline, remaining))
        try:
            outcome = await pipeline
        except ActivityError as err:
            if self._timed_out:
                failure = ApplicationError(
                    f"run exceeded its timeout of {budget:g}s",
                    type=TIMED_OUT_ERROR,
                    non_retryable=True,
                )
                await self._notify(input, policy, "timed_out", error=failure)
                # Visibility shows this run as Failed; the memo tells it timed out.
                _record_ending(RunEnding("timed_out", error=_error(failure)))
                raise failure from None
            if is_cancelled_exception(err):
                await self._notify(input, policy, "cancelled")
                _record_ending(RunEnding("cancelled"))
                raise
            failure = _run_failure(err)
            await self._notify(input, policy, "failed", error=failure)
            _record_ending(_failed_ending(failure))
            raise failure from None
        finally:
            deadline_timer.cancel()

        started = datetime.fromisoformat(outcome.started_at)
        finished = datetime.fromisoformat(outcome.finished_at)
        result = PipelineRunResult(
            outputs=outcome.outputs,
            run_name=input.run_name,
            started_at=outcome.started_at,
            finished_at=outcome.finished_at,
            execution_time=(finished - started).total_seconds(),
            progress=outcome.progress,
        )
        await self._notify(input, policy, "succeeded", result=result)
        _record_ending(
            RunEnding(
                "succeeded",
                complete=True,
                started_at=outcome.started_at,
                attempt=outcome.attempt,
                progress=outcome.progress,
                outputs=outcome.outputs,
            )
        )
        return result

    @workflow.query
    def deadline(self) -> str | None:
        """When the run times out (RFC 3339): only the workflow knows its budget."""
        return self._deadline

    async def _cancel_at_deadline(self, pipeline: asyncio.Task, seconds: float) -> None:
        await workflow.sleep(seconds)
        self._timed_out = True
        pipeline.cancel()

    async def _notify(
        self,
        input: PipelineRunInput,
        policy: RunPolicy,
        event: str,
        *,
        result: PipelineRunResult | None = None,
        error: ApplicationError | None = None,
    ) -> None:
        """Hand a terminal event to its own delivery workflow, abandoned by this run."""
        wanted = input.callback_events or TERMINAL_EVENTS
        if not input.callback_url or event not in wanted:
            return
        run_id = workflow.info().workflow_id
        await workflow.start_child_workflow(
            WEBHOOK_WORKFLOW_TYPE,
            WebhookDeliveryInput(
                url=input.callback_url,
                event=event,
                message_id=webhook_delivery_id(run_id, event),
                payload=_run_payload(input, policy, event, result, error),
                retry_window=policy.webhook_retry_window,
                max_interval=policy.webhook_max_interval,
                attempt_timeout=policy.webhook_attempt_timeout,
            ),
            id=webhook_delivery_id(run_id, event),
            task_queue=workflow.info().task_queue,
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            static_summary=f"webhook {event} of run {run_id}",
        )


def _run_payload(
    input: PipelineRunInput,
    policy: RunPolicy,
    status: str,
    result: PipelineRunResult | None,
    error: ApplicationError | None,
) -> dict[str, Any]:
    info = workflow.info()
    return run_payload(
        run_id=info.workflow_id,
        run_name=input.run_name,
        pipeline_name=policy.pipeline_name,
        task_queue=info.task_queue,
        status=status,
        progress=result.progress if result else None,
        created_at=info.workflow_start_time.isoformat(),
        started_at=result.started_at if result else None,
        finished_at=workflow.now().isoformat(),
        outputs=result.outputs if result else None,
        error=_error(error) if error else None,
    )


def _record_ending(ending: RunEnding) -> None:
    """Write the run's end into its memo, in the workflow task that closes it; outputs
    or an error message that would overflow a memo are left to the close event."""
    if ending.outputs is not None and _json_size(ending) > ENDING_MEMO_MAX_BYTES:
        ending.outputs, ending.result_in_history = None, True
    if ending.error is not None and _json_size(ending) > ENDING_MEMO_MAX_BYTES:
        ending.error = {"type": ending.error["type"], "message": ""}
        ending.result_in_history = True
    workflow.upsert_memo({OUTCOME_MEMO: ending})


def _json_size(ending: RunEnding) -> int:
    return len(json.dumps(asdict(ending), separators=(",", ":")).encode())


def _error(failure: ApplicationError) -> dict[str, str]:
    return {"type": failure.type or "", "message": failure.message}


def _failed_ending(failure: ApplicationError) -> RunEnding:
    """Complete when the pipeline's own error says when it started (its details)."""
    ending = RunEnding("failed", error=_error(failure))
    detail = failure.details[0] if failure.details else None
    if isinstance(detail, dict) and detail.get("started_at"):
        ending.complete = True
        ending.started_at = detail["started_at"]
        ending.attempt = int(detail.get("attempt") or 0)
        if isinstance(progress := detail.get("progress"), dict):
            ending.progress = Progress(
                **{key: value for key, value in progress.items() if key in _PROGRESS_FIELDS}
            )
    return ending


_PROGRESS_FIELDS = frozenset(Progress.__dataclass_fields__)


def _budget(timeout: float | None, policy: RunPolicy) -> float:
    if timeout is None or timeout <= 0:
        return policy.default_timeout
    return min(timeout, policy.max_timeout)


def _summary(pipeline_name: str, run_name: str | None) -> str:
    return f"{pipeline_name}: {run_name}" if run_name else pipeline_name


def _run_failure(err: ActivityError) -> ApplicationError:
    """Report why the pipeline failed with the type and message its code raised."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return ApplicationError(cause.message, *cause.details, type=cause.type, non_retryable=True)
    if isinstance(cause, TimeoutError):
        return ApplicationError(
            f"the pipeline's worker stopped responding ({cause.message})",
            type=WORKER_LOST_ERROR,
            non_retryable=True,
        )
    message = cause.message if cause is not None else err.message
    return ApplicationError(message, type=type(cause).__name__, non_retryable=True)
