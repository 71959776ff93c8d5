"""`/runs`: list runs, read one, follow one as server-sent events, cancel one.

A run is answered as the `Run` the read service built, serialized once: declaring it
as the response model would have FastAPI validate it a second time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any

import pydantic_core
from fastapi import APIRouter, Query, Response
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send
from temporalio.service import RPCError

from warmrun.api.deps import Authenticated, DeploymentDep
from warmrun.api.models import RunList
from warmrun.api.problems import problem_responses
from warmrun.resource import Run
from warmrun.run import Progress, RunStatus
from warmrun.services.cancel import cancel_run
from warmrun.services.errors import RunAlreadyEnded, RunNotFound
from warmrun.services.listing import list_runs
from warmrun.services.read import completed_step_names, read_run, wait_until_closed
from warmrun.services.watch import RunFollower

router = APIRouter(
    prefix="/runs",
    tags=["runs"],
    dependencies=[Authenticated],
    responses=problem_responses(401, 404, 422, 503),
)

POLL_HINT_SECONDS = 1
EVENTS_PING_SECONDS = 15


def run_answer(run: Run, status_code: int = 200) -> Response:
    headers = {} if run.is_terminal else {"Retry-After": str(POLL_HINT_SECONDS)}
    return Response(
        run.model_dump_json(),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


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
    page = await list_runs(deployment, status, limit, page_token)
    return RunList(runs=page.runs, next_page_token=page.next_page_token)


@router.get(
    "/{run_id}",
    response_model=None,
    responses={200: {"model": Run, "description": "The run."}},
)
async def get_run(run_id: str, deployment: DeploymentDep) -> Response:
    """The run as the Temporal server knows it; works while no worker is running.
    `Retry-After` suggests when to look again while it goes on."""
    return run_answer(await read_run(deployment, run_id))


@router.delete(
    "/{run_id}",
    status_code=202,
    response_model=None,
    responses={
        202: {"model": Run, "description": "Cancellation requested."},
        409: {"model": Run, "description": "The run already ended."},
    },
)
async def cancel(run_id: str, deployment: DeploymentDep) -> Response:
    """Request cancellation. The run turns `cancelled` once the pipeline has stopped."""
    try:
        run = await cancel_run(deployment, run_id)
    except RunAlreadyEnded as ended:
        return run_answer(ended.run, status_code=409)
    return run_answer(run, status_code=202)


@router.get(
    "/{run_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "The run's events."},
        **problem_responses(429),
    },
)
async def run_events(run_id: str, deployment: DeploymentDep) -> EventSourceResponse:
    """Server-sent events: first a `status` event with the whole run, then `status`
    (the run) when its status changes and `progress` (the progress object) as steps
    advance, finally an event named after the terminal status (`succeeded`, `failed`,
    `cancelled`, `timed_out`) with the whole run; then the stream ends. A reconnecting
    client gets a fresh snapshot first, so it needs no `Last-Event-ID`. All streams of
    a run share one poller; `429 too_many_streams` when this replica has
    `WARMRUN_MAX_EVENT_STREAMS` open."""
    follower = deployment.feeds.follow(
        run_id,
        read=partial(read_run, deployment, run_id),
        wait_closed=partial(wait_until_closed, deployment.client, run_id),
        read_names=partial(completed_step_names, deployment, run_id),
    )
    try:
        first = await follower.next()
    except BaseException:
        follower.close()
        raise
    return _RunEventStream(follower, _run_changes(follower, first), ping=EVENTS_PING_SECONDS)


class _RunEventStream(EventSourceResponse):
    """Leaves the run's feed however the response ends: a client gone before the first
    event leaves the generator unstarted, and an unstarted generator runs no cleanup."""

    def __init__(self, follower: RunFollower, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._follower = follower

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._follower.close()


async def _run_changes(follower: RunFollower, run: Run) -> AsyncIterator[ServerSentEvent]:
    sequence = 0

    def event(name: str, data: str) -> ServerSentEvent:
        nonlocal sequence
        sequence += 1
        return ServerSentEvent(data=data, event=name, id=str(sequence))

    yield event("status", run.model_dump_json())
    announced = _steps_announced(run.progress)
    while not run.is_terminal:
        try:
            now = await follower.next()
        except (RPCError, RunNotFound) as err:
            yield event("error", f'{{"detail": "cannot read the run: {type(err).__name__}"}}')
            return
        changed = (now.status, now.cancel_requested, now.attempt) != (
            run.status,
            run.cancel_requested,
            run.attempt,
        )
        if changed and not now.is_terminal:  # the terminal event follows the loop
            yield event("status", now.model_dump_json())
        if now.progress is not None and now.progress.steps_completed > announced:
            # Steps that began and ended between two snapshots: one event each all the
            # same, so that a client following progress sees every step by its name.
            for missed in await _missed_steps(follower, now.progress, announced):
                yield event("progress", pydantic_core.to_json(missed).decode())
        if not now.is_terminal and now.progress != run.progress and now.progress is not None:
            # Also right after a status event: a client following progress alone sees
            # every step (the first one begins as the run turns running).
            yield event("progress", pydantic_core.to_json(now.progress).decode())
        announced = max(announced, _steps_announced(now.progress))
        run = now
    yield event(run.status, run.model_dump_json())


def _steps_announced(progress: Progress | None) -> int:
    """How many steps a stream has announced once it sent `progress`: those completed,
    and the one executing."""
    if progress is None:
        return 0
    return progress.steps_completed + (progress.step is not None)


async def _missed_steps(
    follower: RunFollower, progress: Progress, announced: int
) -> list[Progress]:
    """The progress each completed step at or after `announced` showed as it began."""
    positions = range(announced, progress.steps_completed)
    names = await follower.step_names(positions)
    total = progress.steps_total
    return [
        Progress(
            step=names[position],
            steps_completed=position,
            steps_total=total,
            fraction=min(position / total, 1.0) if total else None,
        )
        for position in positions
        if position in names
    ]
