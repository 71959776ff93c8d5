"""`/runs`: list runs, read one, follow one as server-sent events, cancel one."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent
from temporalio.service import RPCError, RPCStatusCode

from warmrun.api.auth import Authenticated
from warmrun.api.dependencies import Deployment, DeploymentDep
from warmrun.api.models import RunList, RunResource, RunStatus
from warmrun.api.problems import Problem, problem_responses, validation_problem
from warmrun.api.run_state import RunNotFound, list_runs, read_run

router = APIRouter(
    prefix="/runs",
    tags=["runs"],
    dependencies=[Authenticated],
    responses=problem_responses(401, 404, 422, 503),
)

POLL_HINT_SECONDS = 1
EVENTS_POLL_SECONDS = 0.5
"""How often an event stream looks at the run (Temporal has no push for heartbeats)."""
EVENTS_PING_SECONDS = 15


async def _read(deployment: Deployment, run_id: str) -> RunResource:
    try:
        return await read_run(deployment, run_id)
    except RunNotFound:
        raise Problem(
            404, "run_not_found", f"no run {run_id!r} in deployment {deployment.name!r}"
        ) from None


@router.get("", response_model=RunList)
async def list_deployment_runs(
    deployment: DeploymentDep,
    status: Annotated[RunStatus | None, Query(description="Only runs in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Runs per page.")] = 20,
    page_token: Annotated[
        str | None, Query(max_length=4096, description="`next_page_token` of the page before.")
    ] = None,
) -> RunList:
    """This deployment's runs from Temporal visibility: open runs first, newest first,
    then ended runs, most recently ended first."""
    token = _decode_page_token(page_token)
    try:
        page = await list_runs(deployment, status, limit, token)
    except RPCError as err:
        if err.status == RPCStatusCode.INVALID_ARGUMENT and token is not None:
            raise _bad_page_token() from None
        raise
    next_token = page.next_page_token
    return RunList(
        runs=page.runs,
        next_page_token=base64.urlsafe_b64encode(next_token).decode() if next_token else None,
    )


def _decode_page_token(page_token: str | None) -> bytes | None:
    if not page_token:
        return None
    try:
        return base64.urlsafe_b64decode(page_token.encode())
    except (binascii.Error, ValueError):
        raise _bad_page_token() from None


def _bad_page_token() -> Problem:
    return validation_problem(
        [
            {
                "loc": ["query", "page_token"],
                "msg": "not a page token of this API",
                "type": "value_error",
            }
        ]
    )


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


@router.get(
    "/{run_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "The run's events."}},
)
async def run_events(run_id: str, deployment: DeploymentDep) -> EventSourceResponse:
    """Server-sent events: first a `status` event with the whole run, then `status`
    (the run) when its status changes and `progress` (the progress object) as steps
    advance, finally an event named after the terminal status (`succeeded`, `failed`,
    `cancelled`, `timed_out`) with the whole run; then the stream ends. A reconnecting
    client gets a fresh snapshot first, so it needs no `Last-Event-ID`."""
    first = await _read(deployment, run_id)
    return EventSourceResponse(_run_changes(deployment, first), ping=EVENTS_PING_SECONDS)


async def _run_changes(deployment: Deployment, run: RunResource) -> AsyncIterator[ServerSentEvent]:
    sequence = 0

    def event(name: str, data: str) -> ServerSentEvent:
        nonlocal sequence
        sequence += 1
        return ServerSentEvent(data=data, event=name, id=str(sequence))

    yield event("status", run.model_dump_json())
    while not run.is_terminal:
        await asyncio.sleep(EVENTS_POLL_SECONDS)
        try:
            now = await read_run(deployment, run.run_id)
        except (RPCError, RunNotFound) as err:
            yield event("error", f'{{"detail": "cannot read the run: {type(err).__name__}"}}')
            return
        if (now.status, now.cancel_requested, now.attempt) != (
            run.status,
            run.cancel_requested,
            run.attempt,
        ):
            if not now.is_terminal:
                yield event("status", now.model_dump_json())
        elif now.progress != run.progress and now.progress is not None:
            yield event("progress", now.progress.model_dump_json())
        run = now
    yield event(run.status, run.model_dump_json())
