"""The Temporal worker of one deployment, and the warm state it shares between runs."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from warmrun.activities import PipelineActivities, WebhookActivities
from warmrun.deployment import Deployment
from warmrun.metrics import Metrics
from warmrun.nexus import RunsNexusHandler
from warmrun.pipeline import Pipeline
from warmrun.run import task_queue_for
from warmrun.services.backlog import Backlog
from warmrun.settings import Settings
from warmrun.versioning import make_current, replica_version
from warmrun.workflows import PipelineRun, WebhookDelivery

logger = logging.getLogger(__name__)

T = TypeVar("T")


def build_worker(
    client: Client,
    pipeline: Pipeline,
    settings: Settings,
    *,
    state: Any = None,
    executor: ThreadPoolExecutor | None = None,
    metrics: Metrics | None = None,
    deployment: Deployment | None = None,
) -> Worker:
    """A worker polling the deployment's task queue, as one version of its Worker
    Deployment (`warmrun.versioning`); every replica of a build builds the same one."""
    metrics = metrics or Metrics()
    activities = PipelineActivities(pipeline, settings, state, executor, metrics)
    webhooks = WebhookActivities(settings, metrics)
    # The Nexus service shares the deployment this process serves, when it serves the
    # API too (one backlog estimate, one draining flag); a worker alone has its own.
    if deployment is None:
        task_queue = task_queue_for(settings.deployment_name(pipeline.name))
        backlog = Backlog(client, task_queue, settings.max_pending_runs)
        deployment = Deployment(pipeline, settings, client, backlog, metrics)
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
        nexus_service_handlers=[RunsNexusHandler(deployment)],
        max_concurrent_activities=settings.max_concurrent_runs,
        # Progress reaches the server this often at most, whatever the heartbeat timeout.
        max_heartbeat_throttle_interval=timedelta(seconds=settings.progress_interval),
        default_heartbeat_throttle_interval=timedelta(seconds=settings.progress_interval),
        graceful_shutdown_timeout=timedelta(seconds=settings.shutdown_grace),
        deployment_config=replica_version(pipeline, settings).worker_config(),
    )


@asynccontextmanager
async def running_worker(
    client: Client,
    pipeline: Pipeline,
    settings: Settings,
    metrics: Metrics | None = None,
    deployment: Deployment | None = None,
) -> AsyncIterator[Worker]:
    """Warm up (`init()`), run the worker until the block exits, then `cleanup(state)`.

    A versioned worker first makes its version current if asked to (`--promote`) or if
    the deployment never had one: until then no run of the deployment would execute."""
    state = await _call(pipeline.init) if pipeline.init else None
    executor = ThreadPoolExecutor(
        max_workers=settings.max_concurrent_runs, thread_name_prefix=f"warmrun-{pipeline.name}"
    )
    worker = build_worker(
        client,
        pipeline,
        settings,
        state=state,
        executor=executor,
        metrics=metrics,
        deployment=deployment,
    )
    polling = asyncio.create_task(worker.run(), name="warmrun-worker")
    version = replica_version(pipeline, settings)
    logger.info(
        "worker polling task queue %s as build %s (versioning: %s)",
        worker.task_queue,
        version.build_id,
        version.versioning,
    )
    try:
        if version.versioned:
            promoting = make_current(client, version, take_over=settings.promote)
            await _while_polling(polling, promoting)
        yield worker
    finally:
        await worker.shutdown()
        await asyncio.gather(polling, return_exceptions=True)
        executor.shutdown(wait=False, cancel_futures=True)
        if pipeline.cleanup:
            await _call(pipeline.cleanup, state)


async def _while_polling(polling: asyncio.Task[None], work: Awaitable[T]) -> T:
    """Await `work`, unless the worker stops polling first (its error is raised then)."""
    task = asyncio.ensure_future(work)
    await asyncio.wait({task, polling}, return_when=asyncio.FIRST_COMPLETED)
    if not task.done():
        task.cancel()
        polling.result()
        raise RuntimeError("the worker stopped polling")
    return task.result()


async def _call(hook: Callable[..., Any], *args: Any) -> Any:
    result = hook(*args)
    return await result if inspect.isawaitable(result) else result
