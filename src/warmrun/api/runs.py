"""`/runs/{run_id}`: read a run, cancel a run."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from temporalio.service import RPCError, RPCStatusCode

from warmrun.api.auth import Authenticated
from warmrun.api.dependencies import Deployment, DeploymentDep
from warmrun.api.models import RunResource
from warmrun.api.problems import Problem, problem_responses
from warmrun.api.run_state import RunNotFound, read_run

router = APIRouter(
    prefix="/runs",
    tags=["runs"],
    dependencies=[Authenticated],
    responses=problem_responses(401, 404, 503),
)

POLL_HINT_SECONDS = 1


async def _read(deployment: Deployment, run_id: str) -> RunResource:
    try:
        return await read_run(deployment, run_id)
    except RunNotFound:
        raise Problem(
            404, "run_not_found", f"no run {run_id!r} in deployment {deployment.name!r}"
        ) from None


@router.get("/{run_id}", response_model=RunResource)
async def get_run(run_id: str, deployment: DeploymentDep, response: Response) -> RunResource:
    """The run as the Temporal server knows it; works while no worker is running."""
    run = await _read(deployment, run_id)
    if not run.is_terminal:
        response.headers["Retry-After"] = str(POLL_HINT_SECONDS)
    return run


@router.delete(
    "/{run_id}",
    status_code=202,
    response_model=RunResource,
    responses={409: {"model": RunResource, "description": "The run already ended."}},
)
async def cancel_run(run_id: str, deployment: DeploymentDep) -> RunResource | JSONResponse:
    """Request cancellation. The run turns `cancelled` once the pipeline has stopped."""
    run = await _read(deployment, run_id)
    if run.is_terminal:
        return JSONResponse(run.model_dump(mode="json"), status_code=409)
    try:
        await deployment.client.get_workflow_handle(run_id).cancel()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        ended = await _read(deployment, run_id)  # it ended between the read and the cancel
        return JSONResponse(ended.model_dump(mode="json"), status_code=409)
    return await _read(deployment, run_id)
