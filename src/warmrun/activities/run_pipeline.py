"""`run_pipeline`: executes the user's pipeline inside this warm process.

Sync pipelines run in a thread pool sized like the worker's activity slots; `async
def` pipelines run on the event loop. Progress written by the pipeline is sent as
heartbeat details, so the Temporal server (and `GET /runs/{id}`) holds it even when
this process is gone.

The event loop is shared with the HTTP API, so JSON work that grows with the
pipeline's data is kept off it: a sync pipeline's value becomes its outputs in the
pipeline's own thread, and large outputs (up to `WARMRUN_MAX_OUTPUT_BYTES`) or
checkpoints (up to 256 KiB in every heartbeat) are encoded in a thread, with the SDK's
pydantic converter (30x faster than its default one on such data, the same JSON), and
handed to Temporal as ready payloads (`RawValue`). An `async def` pipeline's value is
converted on the loop, where the pipeline built it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, cast

from pydantic import ValidationError
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.common import RawValue
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from warmrun.activities.run_events import RunEventSender
from warmrun.context import CancellationRequested, RetryableError, RunContext
from warmrun.metrics import Metrics
from warmrun.pipeline import InvalidOutputs, Outputs, Pipeline
from warmrun.run import (
    CLOSE_ZENML_RUN_ACTIVITY,
    INVALID_OUTPUTS_ERROR,
    INVALID_PARAMETERS_ERROR,
    MAX_OUTCOME_STEPS,
    RUN_PIPELINE_ACTIVITY,
    RUN_POLICY_ACTIVITY,
    ZENML_RUN_SIGNAL,
    CloseZenMLRunInput,
    FailureDetails,
    PipelineOutcome,
    RunPipelineInput,
    RunPolicy,
    RunStatus,
    ZenMLRunLink,
    checkpoints_from_heartbeat,
)
from warmrun.settings import Settings

LINK_TIMEOUT = 10.0
"""Seconds the pipeline's thread waits for the Temporal server to take a ZenML run link."""
MAX_SILENCE = 2.0
"""Longest gap between heartbeats: a cancel reaches a run only in a heartbeat's answer."""
LARGE_JSON_BYTES = 64 * 1024
"""JSON this large is encoded in a thread rather than on the shared event loop."""
_JSON = pydantic_data_converter.payload_converter

logger = logging.getLogger(__name__)


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

    @activity.defn(name=CLOSE_ZENML_RUN_ACTIVITY)
    async def close_zenml_run(self, input: CloseZenMLRunInput) -> None:
        """Finish the ZenML run of a run warmrun gave up on (idempotent)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._pipeline.close_run, input)

    @activity.defn(name=RUN_PIPELINE_ACTIVITY)
    async def run_pipeline(self, input: RunPipelineInput) -> PipelineOutcome:
        metrics, started = self._metrics, time.monotonic()
        metrics.runs_executing.inc()
        outcome = RunStatus.FAILED
        try:
            result = await self._execute(input)
            outcome = RunStatus.SUCCEEDED
            return result
        except asyncio.CancelledError:
            outcome = RunStatus.CANCELLED
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
            resume_from=checkpoints_from_heartbeat(info.heartbeat_details),
            on_change=lambda: loop.call_soon_threadsafe(changed.set),
            deadline=datetime.fromisoformat(input.deadline) if input.deadline else None,
            on_zenml_run=_zenml_run_linker(loop, info),
        )
        events = RunEventSender(input, self._settings, self._pipeline.name)
        work = self._start(self._pipeline.arguments(parameters, context))
        heartbeats: asyncio.Task[None] | None = None
        # From here on the pipeline runs: every way out of this block stops it first.
        try:
            await events.started(context.snapshot())
            heartbeats = asyncio.create_task(self._heartbeat(context, changed, events))
            outputs = await asyncio.shield(work)
        except asyncio.CancelledError:
            # The run's cancel or timeout, or this worker's shutdown (then retried).
            shutdown = activity.is_worker_shutdown()
            await _stopped(work, context, interrupt=self._pipeline.is_async, shutdown=shutdown)
            raise
        except InvalidOutputs as err:
            raise ApplicationError(
                str(err), type=INVALID_OUTPUTS_ERROR, non_retryable=True
            ) from None
        except Exception as err:
            if not work.done():  # the failure was not the pipeline's own
                await _stopped(work, context, interrupt=self._pipeline.is_async)
            retryable = isinstance(err, RetryableError) or isinstance(err.__cause__, RetryableError)
            # A pipeline raising Temporal's ApplicationError names its failure's type.
            own = err if isinstance(err, ApplicationError) else None
            raise ApplicationError(
                (own.message if own else str(err)) or type(err).__name__,
                FailureDetails(
                    started_at=started_at, attempt=info.attempt, progress=context.snapshot()
                ),
                type=(own.type if own else None) or type(err).__name__,
                non_retryable=not retryable,
            ) from err
        finally:
            if heartbeats is not None:
                heartbeats.cancel()

        outcome = PipelineOutcome(
            outputs=outputs.value,
            started_at=started_at,
            finished_at=_now(),
            progress=context.snapshot(),
            attempt=info.attempt,
            outputs_bytes=outputs.size,
            steps=[step.name for step in context.checkpoints()[-MAX_OUTCOME_STEPS:]],
        )
        if outputs.size < LARGE_JSON_BYTES:
            return outcome
        payload = await asyncio.to_thread(_JSON.to_payload, outcome)
        return cast(PipelineOutcome, RawValue(payload))  # decoded as a PipelineOutcome

    def _start(self, arguments: dict[str, Any]) -> asyncio.Future[Outputs]:
        """The pipeline's call and the conversion of its value to outputs (for sync
        code both in the pool's thread)."""
        max_bytes = self._settings.max_output_bytes
        function = self._pipeline.function
        if self._pipeline.is_async:
            return asyncio.ensure_future(_async_call(function, arguments, max_bytes))
        call = functools.partial(_sync_call, function, arguments, max_bytes)
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
            details: list[Any] = [progress, context.checkpoints()]
            if context.checkpoint_bytes >= LARGE_JSON_BYTES:
                payloads = await asyncio.to_thread(_JSON.to_payloads, details)
                details = [RawValue(payload) for payload in payloads]
            activity.heartbeat(*details)
            await events.progress(progress)


def _zenml_run_linker(
    loop: asyncio.AbstractEventLoop, info: activity.Info
) -> Callable[[ZenMLRunLink], None] | None:
    try:
        client = activity.client()
    except RuntimeError:  # an activity run outside a worker (tests) has no client
        return None
    run = client.get_workflow_handle(info.workflow_id, run_id=info.workflow_run_id)
    return functools.partial(_link_zenml_run, loop, run)


def _link_zenml_run(
    loop: asyncio.AbstractEventLoop, run: WorkflowHandle[Any, Any], link: ZenMLRunLink
) -> None:
    """Tell the run's workflow which ZenML run it is, from the pipeline's thread; the
    signal is in the history before the activity can end, so the memo has it."""
    sent = asyncio.run_coroutine_threadsafe(run.signal(ZENML_RUN_SIGNAL, link), loop)
    try:
        sent.result(LINK_TIMEOUT)
    except Exception:
        logger.warning(
            "run %s: could not record its ZenML run %s", run.id, link.run_id, exc_info=True
        )


def _sync_call(function: Callable[..., Any], arguments: dict[str, Any], max_bytes: int) -> Outputs:
    return Pipeline.to_outputs(function(**arguments), max_bytes)


async def _async_call(
    function: Callable[..., Any], arguments: dict[str, Any], max_bytes: int
) -> Outputs:
    return Pipeline.to_outputs(await function(**arguments), max_bytes)


async def _stopped(
    work: asyncio.Future[Any], context: RunContext, *, interrupt: bool, shutdown: bool = False
) -> None:
    """Ask the pipeline to stop and wait until it has: cancellation is reported only
    once the code no longer runs (the activity keeps heartbeating meanwhile).

    An async pipeline is interrupted at its next `await`; a thread cannot be, so sync
    code stops at its next `ctx.step`, `ctx.progress` or `ctx.check_cancelled()`.
    """
    context._request_cancel(worker_shutdown=shutdown)
    if interrupt:
        work.cancel()
    try:
        await work
    except (asyncio.CancelledError, CancellationRequested):
        pass  # how a pipeline is expected to stop
    except Exception:
        logger.warning("run %s: the pipeline raised while stopping", context.run_id, exc_info=True)


def _now() -> str:
    return datetime.now(UTC).isoformat()
