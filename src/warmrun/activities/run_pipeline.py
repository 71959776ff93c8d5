"""`run_pipeline`: executes the user's pipeline inside this warm process.

Sync pipelines run in a thread pool sized like the worker's activity slots; `async
def` pipelines run on the event loop. Progress written by the pipeline is sent as
heartbeat details, so the Temporal server (and `GET /runs/{id}`) holds it even when
this process is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from warmrun.activities.run_events import RunEventSender
from warmrun.context import RetryableError, RunCancelled, RunContext
from warmrun.metrics import Metrics
from warmrun.pipeline import InvalidOutputs, Pipeline
from warmrun.settings import Settings
from warmrun.workflows.contract import (
    INVALID_OUTPUTS_ERROR,
    INVALID_PARAMETERS_ERROR,
    RUN_PIPELINE_ACTIVITY,
    RUN_POLICY_ACTIVITY,
    PipelineOutcome,
    RunPipelineInput,
    RunPolicy,
    StepCheckpoint,
)

MAX_SILENCE = 2.0
"""Longest gap between heartbeats: a cancel reaches a run only in a heartbeat's answer."""


class PipelineActivities:
    """The activities of one deployment, bound to its warm state and thread pool."""

    def __init__(
        self,
        pipeline: Pipeline,
        settings: Settings,
        state: Any = None,
        executor: ThreadPoolExecutor | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._settings = settings
        self._state = state
        self._executor = executor
        self._metrics = metrics or Metrics()

    @activity.defn(name=RUN_POLICY_ACTIVITY)
    async def resolve_run_policy(self) -> RunPolicy:
        """The policy of a run started without one (by another Temporal client)."""
        return self._settings.run_policy(self._pipeline.name)

    @activity.defn(name=RUN_PIPELINE_ACTIVITY)
    async def run_pipeline(self, input: RunPipelineInput) -> PipelineOutcome:
        metrics, started = self._metrics, time.monotonic()
        metrics.runs_executing.inc()
        outcome = "failed"
        try:
            result = await self._execute(input)
            outcome = "succeeded"
            return result
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            metrics.runs_executing.dec()
            metrics.runs_finished.labels(outcome).inc()
            metrics.run_duration.labels(outcome).observe(time.monotonic() - started)

    async def _execute(self, input: RunPipelineInput) -> PipelineOutcome:
        started_at = _now()
        try:
            parameters = self._pipeline.validate(input.parameters)
        except ValidationError as err:
            raise ApplicationError(
                f"invalid parameters: {err}", type=INVALID_PARAMETERS_ERROR, non_retryable=True
            ) from None

        loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        info = activity.info()
        context = RunContext(
            info.workflow_id,
            input.run_name,
            self._state,
            pipeline_name=self._pipeline.name,
            attempt=info.attempt,
            resume_from=_checkpoints(info.heartbeat_details),
            on_change=lambda: loop.call_soon_threadsafe(changed.set),
        )
        work = self._start(self._pipeline.arguments(parameters, context))
        events = RunEventSender(input, self._settings, self._pipeline.name)
        await events.started(context.snapshot())
        heartbeats = asyncio.create_task(self._heartbeat(context, changed, events))
        try:
            value = await asyncio.shield(work)
        except asyncio.CancelledError:
            await _stopped(work, context, interrupt=self._pipeline.is_async)
            raise
        except Exception as err:
            retryable = isinstance(err, RetryableError) or isinstance(err.__cause__, RetryableError)
            raise ApplicationError(
                str(err) or type(err).__name__,
                {"progress": context.snapshot(), "started_at": started_at, "attempt": info.attempt},
                type=type(err).__name__,
                non_retryable=not retryable,
            ) from err
        finally:
            heartbeats.cancel()

        try:
            outputs = self._pipeline.to_outputs(value, self._settings.max_output_bytes)
        except InvalidOutputs as err:
            raise ApplicationError(
                str(err), type=INVALID_OUTPUTS_ERROR, non_retryable=True
            ) from None
        return PipelineOutcome(
            outputs=outputs,
            started_at=started_at,
            finished_at=_now(),
            progress=context.snapshot(),
            attempt=info.attempt,
        )

    def _start(self, arguments: dict[str, Any]) -> asyncio.Future[Any]:
        function = self._pipeline.function
        if self._pipeline.is_async:
            return asyncio.ensure_future(function(**arguments))
        call = functools.partial(function, **arguments)
        return asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _heartbeat(
        self, context: RunContext, changed: asyncio.Event, events: RunEventSender
    ) -> None:
        """Send progress when it changes (at most every `progress_interval`) and keep
        the activity alive well within the heartbeat timeout."""
        keep_alive = min(self._settings.heartbeat_timeout / 4, MAX_SILENCE)
        spacing = min(self._settings.progress_interval, keep_alive)
        while True:
            # No heartbeat at t=0: a short run then sends none at all (its result carries
            # the progress), which saves an RPC and server work per run.
            await asyncio.sleep(spacing)
            if not changed.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), keep_alive - spacing)
            changed.clear()
            progress = context.snapshot()
            activity.heartbeat(progress, context.checkpoints())
            await events.progress(progress)


async def _stopped(work: asyncio.Future[Any], context: RunContext, *, interrupt: bool) -> None:
    """Ask the pipeline to stop and wait until it has: cancellation is reported only
    once the code no longer runs (the activity keeps heartbeating meanwhile).

    An async pipeline is interrupted at its next `await`; a thread cannot be, so sync
    code stops at its next `ctx.step`, `ctx.progress` or `ctx.check_cancelled()`.
    """
    context._request_cancel()
    if interrupt:
        work.cancel()
    with contextlib.suppress(asyncio.CancelledError, RunCancelled, Exception):
        await work


def _checkpoints(heartbeat_details: Sequence[Any]) -> list[StepCheckpoint]:
    """The steps a lost attempt completed, from its last heartbeat (details[1])."""
    if len(heartbeat_details) < 2 or not isinstance(heartbeat_details[1], list):
        return []
    return [StepCheckpoint(**saved) for saved in heartbeat_details[1] if isinstance(saved, dict)]


def _now() -> str:
    return datetime.now(UTC).isoformat()
