"""The app factory: one FastAPI app per deployment, its worker in the same event loop."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from temporalio.client import Client

from warmrun import __version__
from warmrun.api import invoke, runs, service
from warmrun.api.dependencies import Deployment
from warmrun.api.models import invoke_request_model
from warmrun.api.problems import install_problem_handlers
from warmrun.connection import connect
from warmrun.pipeline import Pipeline
from warmrun.settings import Settings
from warmrun.worker import running_worker

logger = logging.getLogger(__name__)


def create_app(
    pipeline: Pipeline, settings: Settings | None = None, *, client: Client | None = None
) -> FastAPI:
    """Build the deployment's app. Its lifespan connects to Temporal (unless a client is
    given), warms the pipeline up and runs the worker; shutdown drains the worker."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        temporal = client or await connect()
        deployment = Deployment(pipeline=pipeline, settings=settings, client=temporal)
        async with AsyncExitStack() as stack:
            if settings.run_worker:
                deployment.worker = await stack.enter_async_context(
                    running_worker(temporal, pipeline, settings)
                )
            app.state.deployment = deployment
            logger.info(
                "deployment %s serving pipeline %s on task queue %s (namespace %s)",
                deployment.name,
                pipeline.name,
                deployment.task_queue,
                deployment.namespace,
            )
            yield

    app = FastAPI(
        title=f"warmrun · {pipeline.name}",
        version=__version__,
        description=(
            f"Runs of the `{pipeline.name}` pipeline. Each run is a Temporal `PipelineRun` "
            "workflow whose workflow ID is the run_id."
        ),
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    app.include_router(invoke.invoke_router(invoke_request_model(pipeline)))
    app.include_router(runs.router)
    app.include_router(service.router)
    return app
