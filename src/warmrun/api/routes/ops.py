"""Operational routes: liveness, readiness, what this deployment serves, its metrics."""

from __future__ import annotations

import asyncio
import logging
import platform
from datetime import timedelta

import temporalio
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from warmrun import __version__
from warmrun.api.deps import Authenticated, DeploymentDep
from warmrun.api.models import DeploymentInfo, Health, Readiness
from warmrun.api.problems import problem_responses
from warmrun.deployment import Deployment
from warmrun.versioning import VersionState, version_state

public = APIRouter(tags=["service"])
"""Liveness only: a load balancer asks it without a token."""
router = APIRouter(tags=["service"], dependencies=[Authenticated], responses=problem_responses(401))

READINESS_TIMEOUT = timedelta(seconds=2)

logger = logging.getLogger(__name__)


@public.get("/health", response_model=Health)
async def health() -> Health:
    """The process is alive (it does not look at Temporal)."""
    return Health()


@router.get("/ready", response_model=Readiness, responses={503: {"model": Readiness}})
async def ready(deployment: DeploymentDep) -> Readiness | JSONResponse:
    """Temporal answers and, unless this process is API-only, its worker is polling.

    A drained replica stays ready: its API serves every run, and new runs execute on the
    current version whichever replica accepted them."""
    detail = None
    version = asyncio.create_task(_version_state(deployment))
    try:
        temporal = await asyncio.wait_for(
            deployment.client.service_client.check_health(timeout=READINESS_TIMEOUT),
            READINESS_TIMEOUT.total_seconds() + 0.5,
        )
    except Exception as err:  # any failure to answer means: not reachable from here
        logger.debug("readiness: Temporal health check failed", exc_info=True)
        temporal = False
        detail = f"Temporal health check failed: {type(err).__name__}: {err}"
    worker = deployment.worker.is_running if deployment.worker is not None else None
    if worker is False:
        detail = detail or "this process's worker is not polling"
    if deployment.draining:
        detail = "this replica is shutting down"
    state = await version
    readiness = Readiness(
        ready=temporal and worker is not False and not deployment.draining,
        temporal=temporal,
        worker=worker,
        draining=deployment.draining,
        drained=state.drained if state else None,
        detail=detail,
    )
    if not readiness.ready:
        return JSONResponse(readiness.model_dump(), status_code=503)
    return readiness


@router.get("/info", response_model=DeploymentInfo)
async def info(deployment: DeploymentDep) -> DeploymentInfo:
    """The pipeline's parameter and output schemas and where its runs live in Temporal."""
    pipeline, settings, version = deployment.pipeline, deployment.settings, deployment.version
    state = await _version_state(deployment)
    return DeploymentInfo(
        pipeline_name=pipeline.name,
        deployment_name=deployment.name,
        task_queue=deployment.task_queue,
        namespace=deployment.namespace,
        parameters_schema=pipeline.parameters_schema(),
        outputs_schema=pipeline.outputs_schema(),
        max_concurrent_runs=settings.max_concurrent_runs,
        default_timeout=settings.default_timeout,
        max_timeout=settings.max_timeout,
        heartbeat_timeout=settings.heartbeat_timeout,
        build_id=version.build_id,
        worker_deployment=version.deployment_name,
        versioning=version.versioning,
        current=state.current if state else None,
        drained=state.drained if state else None,
        versions={
            "warmrun": __version__,
            "temporalio": temporalio.__version__,
            "python": platform.python_version(),
        },
    )


async def _version_state(deployment: Deployment) -> VersionState | None:
    """Best effort: these routes answer while Temporal does not (the state is null then)."""
    if not deployment.version.versioned:
        return None
    try:
        return await asyncio.wait_for(
            version_state(deployment.client, deployment.version),
            READINESS_TIMEOUT.total_seconds(),
        )
    except Exception:
        logger.debug("could not read this replica's version state", exc_info=True)
        return None


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(deployment: DeploymentDep) -> Response:
    """Prometheus text: `warmrun_*` series, then the Temporal SDK's own (`temporal_*`)."""
    return Response(deployment.metrics.render(), media_type=CONTENT_TYPE_LATEST)
