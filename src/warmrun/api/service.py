"""Service routes: liveness, readiness, what this deployment serves."""

from __future__ import annotations

import asyncio
import platform
from datetime import timedelta

import temporalio
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from warmrun import __version__
from warmrun.api.auth import Authenticated
from warmrun.api.dependencies import DeploymentDep
from warmrun.api.models import DeploymentInfo, Health, Readiness
from warmrun.api.problems import problem_responses

router = APIRouter(tags=["service"])
"""Public: liveness only."""
protected = APIRouter(
    tags=["service"], dependencies=[Authenticated], responses=problem_responses(401)
)

READINESS_TIMEOUT = timedelta(seconds=2)


@router.get("/health", response_model=Health)
async def health() -> Health:
    """The process is alive (it does not look at Temporal)."""
    return Health()


@protected.get("/ready", response_model=Readiness, responses={503: {"model": Readiness}})
async def ready(deployment: DeploymentDep) -> Readiness | JSONResponse:
    """Temporal answers and, unless this process is API-only, its worker is polling."""
    try:
        temporal = await asyncio.wait_for(
            deployment.client.service_client.check_health(timeout=READINESS_TIMEOUT),
            READINESS_TIMEOUT.total_seconds() + 0.5,
        )
    except Exception:
        temporal = False
    worker = deployment.worker.is_running if deployment.worker is not None else None
    readiness = Readiness(
        ready=temporal and worker is not False and not deployment.draining,
        temporal=temporal,
        worker=worker,
        draining=deployment.draining,
    )
    if not readiness.ready:
        return JSONResponse(readiness.model_dump(), status_code=503)
    return readiness


@protected.get("/info", response_model=DeploymentInfo)
async def info(deployment: DeploymentDep) -> DeploymentInfo:
    """The pipeline's parameter and output schemas and where its runs live in Temporal."""
    pipeline, settings = deployment.pipeline, deployment.settings
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
        versions={
            "warmrun": __version__,
            "temporalio": temporalio.__version__,
            "python": platform.python_version(),
        },
    )
