"""`PipelineRun`: the durable state machine of one run.

The workflow does no I/O: it asks its worker for the deployment's run policy, runs
the pipeline as one heartbeating activity, and turns the activity's end into the run's
end. Cancellation waits for the pipeline to stop (WAIT_CANCELLATION_COMPLETED); the
run's `timeout` is a workflow timer that cancels the activity the same way, so
`timed_out`, like `cancelled`, is reported only once the code has stopped.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

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
        RUN_PIPELINE_ACTIVITY,
        RUN_POLICY_ACTIVITY,
        TIMED_OUT_ERROR,
        WORKER_LOST_ERROR,
        WORKFLOW_TYPE,
        PipelineOutcome,
        PipelineRunInput,
        PipelineRunResult,
        RunPipelineInput,
        RunPolicy,
    )


@workflow.defn(name=WORKFLOW_TYPE)
class PipelineRun:
    def __init__(self) -> None:
        self._timed_out = False
        self._deadline: str | None = None

    @workflow.run
    async def run(self, input: PipelineRunInput) -> PipelineRunResult:
        policy = await workflow.execute_local_activity(
            RUN_POLICY_ACTIVITY,
            result_type=RunPolicy,
            start_to_close_timeout=timedelta(seconds=10),
        )
        workflow.upsert_memo({"pipeline_name": policy.pipeline_name, "run_name": input.run_name})
        budget = _budget(input.timeout, policy)
        deadline = workflow.info().workflow_start_time + timedelta(seconds=budget)
        self._deadline = deadline.isoformat()
        remaining = max((deadline - workflow.now()).total_seconds(), 0.0)

        pipeline = workflow.start_activity(
            RUN_PIPELINE_ACTIVITY,
            RunPipelineInput(parameters=input.parameters, run_name=input.run_name),
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
                raise ApplicationError(
                    f"run exceeded its timeout of {budget:g}s",
                    type=TIMED_OUT_ERROR,
                    non_retryable=True,
                ) from None
            if is_cancelled_exception(err):
                raise
            raise _run_failure(err) from None
        finally:
            deadline_timer.cancel()

        started = datetime.fromisoformat(outcome.started_at)
        finished = datetime.fromisoformat(outcome.finished_at)
        return PipelineRunResult(
            outputs=outcome.outputs,
            run_name=input.run_name,
            started_at=outcome.started_at,
            finished_at=outcome.finished_at,
            execution_time=(finished - started).total_seconds(),
            progress=outcome.progress,
        )

    @workflow.query
    def deadline(self) -> str | None:
        """When the run times out (RFC 3339): only the workflow knows its budget."""
        return self._deadline

    async def _cancel_at_deadline(self, pipeline: asyncio.Task, seconds: float) -> None:
        await workflow.sleep(seconds)
        self._timed_out = True
        pipeline.cancel()


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
