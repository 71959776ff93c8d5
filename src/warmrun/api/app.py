"""The app factory: one FastAPI app per deployment, its worker in the same event loop."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from temporalio.client import Client

from warmrun import __version__
from warmrun.api.deps import Authenticated
from warmrun.api.middleware import (
    AuthMiddleware,
    BodyLimitMiddleware,
    InvocationMetricsMiddleware,
)
from warmrun.api.models import invoke_request_model
from warmrun.api.problems import install_problem_handlers
from warmrun.api.routes import invoke, ops, runs
from warmrun.connection import connect
from warmrun.deployment import Deployment
from warmrun.metrics import Metrics
from warmrun.pipeline import Pipeline
from warmrun.run import task_queue_for
from warmrun.sdk_metrics import SdkMetrics
from warmrun.services.backlog import Backlog
from warmrun.settings import Settings
from warmrun.versioning import replica_version
from warmrun.worker import running_worker

logger = logging.getLogger(__name__)


def create_app(
    pipeline: Pipeline, settings: Settings | None = None, *, client: Client | None = None
) -> FastAPI:
    """Build the deployment's app. Its lifespan connects to Temporal (unless a client is
    given), warms the pipeline up and runs the worker; shutdown drains the worker."""
    settings = (settings or Settings()).with_defaults(pipeline.settings_defaults())
    deployment_name = settings.deployment_name(pipeline.name)
    replica_version(pipeline, settings)  # a name Temporal cannot version fails here, not later
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.auth_tokens():
            logger.warning(
                "WARMRUN_AUTH_TOKEN is not set: anyone who can reach this port can start runs"
            )
        sdk_metrics = None
        if client is None:
            sdk_metrics = SdkMetrics()
            metrics.registry.register(sdk_metrics)
            temporal = await connect(runtime=sdk_metrics.runtime)
        else:
            temporal = client
        backlog = Backlog(temporal, task_queue_for(deployment_name), settings.max_pending_runs)
        metrics.track_queue_depth(backlog.estimate)
        deployment = Deployment(
            pipeline=pipeline,
            settings=settings,
            client=temporal,
            backlog=backlog,
            metrics=metrics,
        )
        metrics.track_event_streams(lambda: deployment.feeds.streams, lambda: deployment.feeds.runs)
        async with AsyncExitStack() as stack:
            stack.push_async_callback(backlog.close)
            stack.push_async_callback(deployment.feeds.close)
            if sdk_metrics is not None:
                draining_sdk_metrics = asyncio.create_task(sdk_metrics.drain_forever())
                stack.callback(draining_sdk_metrics.cancel)
            if settings.run_worker:
                deployment.worker = await stack.enter_async_context(
                    running_worker(temporal, pipeline, settings, metrics, deployment)
                )
            app.state.deployment = deployment
            # What start-up made (modules, schemas, the warm state) lives as long as the
            # process: out of the collector's sight, a full collection only walks what
            # runs allocate, instead of pausing every request for 100 ms (measured with
            # large outputs, tests/test_event_loop.py).
            gc.freeze()
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
            f"Runs of the `{pipeline.name}` pipeline (deployment `{deployment_name}`). Each "
            "run is a Temporal `PipelineRun` workflow whose workflow ID is the run_id."
        ),
        lifespan=lifespan,
        # `/runs/` is a 404, not a redirect to a Location built from the Host header.
        redirect_slashes=False,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    # The last added runs first: metrics count every answer, auth refuses before the
    # body limit reads (or refuses) a byte of the body, which comes before parsing.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AuthMiddleware, tokens=settings.auth_tokens())
    app.add_middleware(InvocationMetricsMiddleware, metrics=metrics)
    install_problem_handlers(app)
    app.include_router(invoke.invoke_router(invoke_request_model(pipeline, settings.max_timeout)))
    app.include_router(runs.router)
    app.include_router(ops.public)
    app.include_router(ops.router)
    _add_docs(app, auth=bool(settings.auth_tokens()))
    return app


def _add_docs(app: FastAPI, *, auth: bool) -> None:
    """`/openapi.json` and `/docs` behind the same auth as the API; without auth the
    spec does not claim a security scheme the server does not enforce."""
    spec: dict[str, Any] = {}

    def openapi_spec() -> dict[str, Any]:
        if not spec:
            spec.update(app.openapi())
            if not auth:
                spec.get("components", {}).pop("securitySchemes", None)
                for path in spec.get("paths", {}).values():
                    for operation in path.values():
                        operation.pop("security", None)
                        operation.get("responses", {}).pop("401", None)
        return spec

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Authenticated])
    async def openapi() -> dict[str, Any]:
        return openapi_spec()

    @app.get("/docs", include_in_schema=False, dependencies=[Authenticated])
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} · docs")
