"""The Temporal worker of one deployment, and the warm state it shares between runs."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from warmrun.activities import PipelineActivities, WebhookActivities
from warmrun.metrics import Metrics
from warmrun.pipeline import Pipeline
from warmrun.run import task_queue_for
from warmrun.settings import Settings
from warmrun.workflows import PipelineRun, WebhookDelivery

logger = logging.getLogger(__name__)


def build_worker(
    client: Client,
    pipeline: Pipeline,
    settings: Settings,
    *,
    state: Any = None,
    executor: ThreadPoolExecutor | None = None,
    metrics: Metrics | None = None,
) -> Worker:
    """A worker polling the deployment's task queue; every replica builds the same one."""
    metrics = metrics or Metrics()
    activities = PipelineActivities(pipeline, settings, state, executor, metrics)
    webhooks = WebhookActivities(settings, metrics)
    return Worker(
        client,
        task_queue=task_queue_for(settings.deployment_name(pipeline.name)),
        workflows=[PipelineRun, WebhookDelivery],
        # No sandbox: building one per run cost several ms of CPU per run (measured in
        # BENCHMARKS.md). warmrun's two workflows are small and deterministic, and
        # tests/test_replay.py replays their recorded histories in the sandbox so a
        # non-deterministic change still fails loudly.
        workflow_runner=UnsandboxedWorkflowRunner(),
        activities=[
            activities.resolve_run_policy,
            activities.run_pipeline,
            activities.close_zenml_run,
            webhooks.deliver_webhook,
        ],
        max_concurrent_activities=settings.max_concurrent_runs,
        # Progress reaches the server this often at most, whatever the heartbeat timeout.
        max_heartbeat_throttle_interval=timedelta(seconds=settings.progress_interval),
        default_heartbeat_throttle_interval=timedelta(seconds=settings.progress_interval),
        graceful_shutdown_timeout=timedelta(seconds=settings.shutdown_grace),
    )


@asynccontextmanager
async def running_worker(
    client: Client, pipeline: Pipeline, settings: Settings, metrics: Metrics | None = None
) -> AsyncIterator[Worker]:
    """Warm up (`init()`), run the worker until the block exits, then `cleanup(state)`."""
    state = await _call(pipeline.init) if pipeline.init else None
    executor = ThreadPoolExecutor(
        max_workers=settings.max_concurrent_runs, thread_name_prefix=f"warmrun-{pipeline.name}"
    )
    worker = build_worker(
        client, pipeline, settings, state=state, executor=executor, metrics=metrics
    )
    polling = asyncio.create_task(worker.run(), name="warmrun-worker")
    logger.info("worker polling task queue %s", worker.task_queue)
    try:
        yield worker
    finally:
        await worker.shutdown()
        await asyncio.gather(polling, return_exceptions=True)
        executor.shutdown(wait=False, cancel_futures=True)
        if pipeline.cleanup:
            await _call(pipeline.cleanup, state)


async def _call(hook: Callable[..., Any], *args: Any) -> Any:
    result = hook(*args)
    return await result if inspect.isawaitable(result) else result
