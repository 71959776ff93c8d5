"""`PipelineRun`: the durable state machine of one run.

The workflow does no I/O: it takes the deployment's run policy from its input (or,
started by another client, asks its worker for it), runs the pipeline as one
heartbeating activity, and turns the activity's end into the run's end. Cancellation
waits for the pipeline to stop (WAIT_CANCELLATION_COMPLETED); the run's `timeout` is a
workflow timer that cancels the activity the same way, so `timed_out`, like
`cancelled`, is reported only once the code has stopped. A run with a `callback_url`
hands its terminal event to a webhook delivery workflow it abandons, so a slow
receiver never keeps the run open. As it closes, the run records how it ended in its
memo (`RunEnding`), so that one `describe()` reads it.

A run of a ZenML pipeline is also a ZenML pipeline run: its activity signals the link
(`ZenMLRunLink`) once that run exists, the workflow keeps it in the memo, and if the
run ends any other way than succeeded it asks a worker to close that ZenML run
(idempotent; a no-op when the activity already finished it), so a run Temporal gave
up on is never left "running" in ZenML.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    TimeoutError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from warmrun.activities.run_pipeline import PipelineActivities
    from warmrun.run import (
        RUN_PIPELINE_ACTIVITY,
        TERMINAL_EVENTS,
        TIMED_OUT_ERROR,
        WORKER_LOST_ERROR,
        WORKFLOW_TYPE,
        ZENML_RUN_SIGNAL,
        CloseZenMLRunInput,
        PipelineRunInput,
        PipelineRunResult,
        RunEnding,
        RunError,
        RunMemo,
        RunPipelineInput,
        RunPolicy,
        RunStatus,
        WebhookDeliveryInput,
        ZenMLRunLink,
        run_payload,
        run_summary,
        webhook_delivery_id,
        webhook_delivery_summary,
        zenml_run_memo,
    )
    from warmrun.workflows.webhook_delivery import WebhookDelivery


@workflow.defn(name=WORKFLOW_TYPE)
class PipelineRun:
    def __init__(self) -> None:
        self._timed_out = False
        self._deadline: str | None = None
        self._zenml_run: ZenMLRunLink | None = None

    @workflow.run
    async def run(self, input: PipelineRunInput) -> PipelineRunResult:
        policy = input.policy or await workflow.execute_local_activity_method(
            PipelineActivities.resolve_run_policy,
            start_to_close_timeout=timedelta(seconds=10),
        )
        memo = RunMemo(
            pipeline_name=policy.pipeline_name,
            run_name=input.run_name,
            callback_url=input.callback_url,
            callback_events=input.callback_events,
        ).to_memo()
        # Runs started through the API carry this memo already; others get it here.
        if any(workflow.memo_value(key, None) != value for key, value in memo.items()):
            workflow.upsert_memo(memo)
        budget = policy.budget(input.timeout)
        deadline = workflow.info().workflow_start_time + timedelta(seconds=budget)
        self._deadline = deadline.isoformat()
        remaining = max((deadline - workflow.now()).total_seconds(), 0.0)
        workflow.set_current_details(
            f"Pipeline `{policy.pipeline_name}` runs as the `{RUN_PIPELINE_ACTIVITY}` activity; "
            "its heartbeat details show the current step and progress.\n\n"
            f"Times out at {self._deadline} ({budget:g} s budget)."
        )

        pipeline = workflow.start_activity_method(
            PipelineActivities.run_pipeline,
            RunPipelineInput(
                parameters=input.parameters,
                run_name=input.run_name,
                callback_url=input.callback_url,
                callback_events=input.callback_events,
                deadline=self._deadline,
            ),
            schedule_to_close_timeout=timedelta(seconds=remaining + policy.cancel_grace),
            heartbeat_timeout=timedelta(seconds=policy.heartbeat_timeout),
            retry_policy=RetryPolicy(maximum_attempts=policy.max_attempts),
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=run_summary(policy.pipeline_name, input.run_name),
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
                await self._close_zenml_run(RunStatus.TIMED_OUT, failure.message)
                await self._notify(input, policy, RunStatus.TIMED_OUT, error=failure)
                # Visibility shows this run as Failed; the memo tells it timed out.
                _record(RunEnding(RunStatus.TIMED_OUT, error=_error(failure)))
                raise failure from None
            if is_cancelled_exception(err):
                await self._close_zenml_run(RunStatus.CANCELLED, "cancelled through warmrun")
                await self._notify(input, policy, RunStatus.CANCELLED)
                _record(RunEnding(RunStatus.CANCELLED))
                raise
            failure = _run_failure(err)
            await self._close_zenml_run(RunStatus.FAILED, failure.message)
            await self._notify(input, policy, RunStatus.FAILED, error=failure)
            _record(RunEnding.of_failure(RunStatus.FAILED, _error(failure), failure.details))
            raise failure from None
        finally:
            deadline_timer.cancel()

        # The times of the HTTP answer and `GET /runs`, from the workflow's clock: the run
        # ends now (Temporal records its close a workflow task later, within ms), its
        # execution time counts from its start, as the API's `execution_time` does.
        finished = workflow.now()
        result = PipelineRunResult(
            outputs=outcome.outputs,
            run_name=input.run_name,
            started_at=outcome.started_at,
            finished_at=finished.isoformat(),
            execution_time=(finished - workflow.info().workflow_start_time).total_seconds(),
            progress=outcome.progress,
        )
        await self._notify(input, policy, RunStatus.SUCCEEDED, result=result)
        ending = RunEnding(
            RunStatus.SUCCEEDED,
            complete=True,
            started_at=outcome.started_at,
            attempt=outcome.attempt,
            progress=outcome.progress,
            outputs=outcome.outputs,
        )
        _record(ending, outputs_bytes=outcome.outputs_bytes)
        return result

    @workflow.signal(name=ZENML_RUN_SIGNAL)
    def zenml_run(self, link: ZenMLRunLink) -> None:
        """The ZenML pipeline run this run is (sent by its activity, again after a replay)."""
        self._zenml_run = link
        workflow.upsert_memo(zenml_run_memo(link))

    @workflow.query
    def deadline(self) -> str | None:
        """When the run times out (RFC 3339): only the workflow knows its budget."""
        return self._deadline

    async def _cancel_at_deadline(self, pipeline: asyncio.Task, seconds: float) -> None:
        await workflow.sleep(seconds)
        self._timed_out = True
        pipeline.cancel()

    async def _close_zenml_run(self, status: RunStatus, reason: str) -> None:
        """Finish the ZenML run of a run that did not succeed, on any worker; the
        activity already did it unless its worker was lost (then nobody else would)."""
        if self._zenml_run is None:
            return
        try:
            await workflow.execute_activity_method(
                PipelineActivities.close_zenml_run,
                CloseZenMLRunInput(
                    zenml_run_id=self._zenml_run.run_id, status=status, reason=reason
                ),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(maximum_attempts=5),
                summary="close the ZenML pipeline run",
            )
        except ActivityError:
            # The run still ends as it did; ZenML's run stays as the store last saw it.
            workflow.logger.warning(
                "could not close ZenML run %s", self._zenml_run.run_id, exc_info=True
            )

    async def _notify(
        self,
        input: PipelineRunInput,
        policy: RunPolicy,
        status: RunStatus,
        *,
        result: PipelineRunResult | None = None,
        error: ApplicationError | None = None,
    ) -> None:
        """Hand a terminal event to its own delivery workflow, abandoned by this run."""
        wanted = input.callback_events or TERMINAL_EVENTS
        if not input.callback_url or status not in wanted:
            return
        info = workflow.info()
        delivery_id = webhook_delivery_id(info.workflow_id, status)
        await workflow.start_child_workflow(
            WebhookDelivery.run,
            WebhookDeliveryInput(
                url=input.callback_url,
                event=status,
                message_id=delivery_id,
                payload=run_payload(
                    run_id=info.workflow_id,
                    run_name=input.run_name,
                    pipeline_name=policy.pipeline_name,
                    task_queue=info.task_queue,
                    status=status,
                    progress=result.progress if result else None,
                    created_at=info.workflow_start_time.isoformat(),
                    started_at=result.started_at if result else None,
                    finished_at=result.finished_at if result else workflow.now().isoformat(),
                    outputs=result.outputs if result else None,
                    error=_error(error) if error else None,
                ),
                retry_window=policy.webhook_retry_window,
                max_interval=policy.webhook_max_interval,
                attempt_timeout=policy.webhook_attempt_timeout,
            ),
            id=delivery_id,
            task_queue=info.task_queue,
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            static_summary=webhook_delivery_summary(info.workflow_id, status),
        )


def _record(ending: RunEnding, outputs_bytes: int | None = None) -> None:
    """Write the run's end into its memo, in the workflow task that closes it."""
    workflow.upsert_memo(ending.fitted(outputs_bytes).to_memo())


def _error(failure: ApplicationError) -> RunError:
    return RunError(type=failure.type or "", message=failure.message)


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
