"""`POST /invoke` and `POST /submit`: start a run, answer at once or at its end.

No `from __future__ import annotations` here: the body type is built per pipeline at
start-up and FastAPI must see it as a real object in the route's signature.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from temporalio.service import RPCError

from warmrun.api.deps import Authenticated, DeploymentDep
from warmrun.api.models import (
    InvokeMetadata,
    InvokeRequestBase,
    InvokeResponse,
    ZenMLInvokeMetadata,
)
from warmrun.api.prefer import Preferences, parse_prefer
from warmrun.api.problems import problem_responses
from warmrun.deployment import Deployment
from warmrun.resource import AcceptedRun
from warmrun.run import RunStatus, ZenMLRunLink
from warmrun.services import idempotency
from warmrun.services.read import RunEnd, start_time, wait_for_end, zenml_run_of
from warmrun.services.start import RunRequest, StartedRun, start_run

KEEPALIVE_SECONDS = 10.0

logger = logging.getLogger(__name__)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=idempotency.HEADER,
        min_length=1,
        max_length=idempotency.MAX_KEY_LENGTH,
        pattern=idempotency.KEY_PATTERN,
        description="The same key never starts a second run of this deployment: a retry "
        "answers with the run the key already names.",
    ),
]


def run_request(deployment: Deployment, body: InvokeRequestBase) -> RunRequest:
    """What the body asks for, with the parameters as the pipeline will see them
    (defaults included)."""
    given = getattr(body, "parameters", None)
    model = given if given is not None else deployment.pipeline.parameters_model()
    return RunRequest(
        parameters=deployment.pipeline.parameters_json(model),
        run_name=body.run_name,
        timeout=body.timeout,
        callback_url=body.callback_url,
        callback_events=[event.value for event in body.callback_events]
        if body.callback_events
        else None,
    )


def accepted(run: StartedRun, preferences: Preferences) -> JSONResponse:
    body = AcceptedRun(
        run_id=run.run_id, status=run.status, created_at=run.created_at, location=run.location
    )
    headers = {"Location": run.location, "X-Run-Id": run.run_id}
    if applied := preferences.applied():
        headers["Preference-Applied"] = applied
    return JSONResponse(body.model_dump(mode="json"), status_code=202, headers=headers)


async def finished(deployment: Deployment, run: StartedRun, preferences: Preferences) -> Response:
    """`Prefer: wait=N`: the result if the run ends within N seconds, else 202."""
    try:
        answer = await asyncio.wait_for(_sync_answer(deployment, run), preferences.wait)
    except TimeoutError:
        return accepted(run, preferences)
    headers = {"X-Run-Id": run.run_id}
    if applied := preferences.applied():
        headers["Preference-Applied"] = applied
    return Response(answer.model_dump_json(), media_type="application/json", headers=headers)


def streamed(deployment: Deployment, run: StartedRun) -> StreamingResponse:
    """A plain sync call: the status line and `X-Run-Id` go out at once, the body when
    the run ends, with a space every `KEEPALIVE_SECONDS` meanwhile (JSON ignores it) so
    that proxies do not cut an idle connection. A caller that hangs up still knows
    the run_id, and the run goes on without it."""

    async def body_chunks() -> AsyncIterator[bytes]:
        waiting = asyncio.ensure_future(_sync_answer(deployment, run))
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=KEEPALIVE_SECONDS)
                if done:
                    break
                yield b" "
            try:
                answer = waiting.result()
            except RPCError as err:
                answer = _lost_contact(deployment, run, err)
            yield answer.model_dump_json().encode()
        finally:
            waiting.cancel()

    return StreamingResponse(
        body_chunks(), media_type="application/json", headers={"X-Run-Id": run.run_id}
    )


async def _sync_answer(deployment: Deployment, run: StartedRun) -> InvokeResponse:
    """Wait for the run's end and answer as ZenML's deployments do. Its times are
    Temporal's (the workflow's start and close), as `GET /runs/{id}` shows them; the
    start is read while the run goes on, so waiting takes no longer for it."""
    client = deployment.client
    created = asyncio.ensure_future(start_time(client, run.run_id, run.workflow_run_id))
    try:
        end = await wait_for_end(client, run.run_id, run.workflow_run_id)
        try:
            created_at = await created or run.created_at
        except RPCError:
            logger.warning("run %s: could not read its start time", run.run_id, exc_info=True)
            created_at = run.created_at
    finally:
        created.cancel()
    deployment.backlog.ended(run.run_id)  # only once it really ended (not on a timeout)
    zenml_run = None
    if deployment.pipeline.links_zenml_runs:
        try:
            zenml_run = await zenml_run_of(client, run.run_id)
        except RPCError:
            logger.warning("run %s: could not read its ZenML run", run.run_id, exc_info=True)
    return invoke_response(deployment, run, end, created_at, zenml_run)


def invoke_response(
    deployment: Deployment,
    run: StartedRun,
    end: RunEnd,
    created_at: datetime,
    zenml_run: ZenMLRunLink | None = None,
) -> InvokeResponse:
    """The ZenML-shaped answer of a run that ended; `success: false` unless it succeeded."""
    execution_time = None
    if end.finished_at is not None:
        execution_time = (end.finished_at - created_at).total_seconds()
    error = None
    if end.error is not None:
        error = deployment.pipeline.error_text(end.error, end.progress)
    return InvokeResponse(
        success=end.status == RunStatus.SUCCEEDED,
        outputs=end.outputs,
        execution_time=execution_time,
        metadata=_metadata(deployment, run, end.status, created_at, end.finished_at, zenml_run),
        error=error,
    )


def _lost_contact(deployment: Deployment, run: StartedRun, err: RPCError) -> InvokeResponse:
    """The 200 is already sent when Temporal stops answering: say so in the body."""
    return InvokeResponse(
        success=False,
        outputs=None,
        metadata=_metadata(deployment, run, RunStatus.RUNNING, run.created_at, None),
        error=f"lost contact with Temporal while waiting ({err.message}); the run goes on: "
        f"GET {run.location}",
    )


def _metadata(
    deployment: Deployment,
    run: StartedRun,
    status: RunStatus,
    created_at: datetime,
    finished_at: datetime | None,
    zenml_run: ZenMLRunLink | None = None,
) -> InvokeMetadata:
    metadata = InvokeMetadata(
        run_id=run.run_id,
        run_name=run.request.run_name,
        pipeline_name=deployment.pipeline.name,
        deployment_name=deployment.name,
        parameters_used=run.request.parameters,
        status=status,
        created_at=created_at,
        finished_at=finished_at,
    )
    if not deployment.pipeline.links_zenml_runs:
        return metadata
    zenml: dict[str, Any] = {}
    if zenml_run is not None:
        zenml = {
            "zenml_run_id": zenml_run.run_id,
            "run_name": zenml_run.run_name,
            "run_index": zenml_run.run_index,
            "snapshot_id": zenml_run.snapshot_id,
            "snapshot_name": zenml_run.snapshot_name,
            "deployment_id": zenml_run.deployment_id,
        }
    return ZenMLInvokeMetadata(**{**metadata.model_dump(), **zenml})


def invoke_router(request_model: type[InvokeRequestBase]) -> APIRouter:
    """Routes whose body is the deployment's own request model."""
    router = APIRouter(tags=["invoke"], dependencies=[Authenticated])
    answers: dict[int | str, dict[str, Any]] = {
        200: {"model": InvokeResponse, "description": "The run ended (successfully or not)."},
        202: {"model": AcceptedRun, "description": "The run is accepted; poll `Location`."},
        **problem_responses(400, 401, 413, 422, 429, 503),
    }

    @router.post(
        "/invoke",
        response_model=None,
        responses=answers,
        summary="Run the pipeline (sync by default, async on request)",
    )
    async def invoke(
        body: request_model,  # type: ignore[valid-type]
        request: Request,
        deployment: DeploymentDep,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        """Start a run. Without `async` or `Prefer: respond-async` the answer waits for
        the run's end (ZenML's contract); the run goes on even if the caller hangs up."""
        preferences = parse_prefer(request.headers.getlist("prefer"))
        if preferences.wait is not None:
            mode = "wait"
        elif body.async_ or preferences.respond_async:
            mode = "async"
        else:
            mode = "sync"
        request.state.invoke_mode = mode  # for the invocation metrics
        run = await start_run(
            deployment,
            run_request(deployment, body),
            idempotency_key,
            caller_waits=mode != "async",
        )
        if mode == "wait":
            return await finished(deployment, run, preferences)
        if mode == "async":
            return accepted(run, preferences)
        return streamed(deployment, run)

    @router.post(
        "/submit",
        response_model=None,
        status_code=202,
        responses={code: answer for code, answer in answers.items() if code != 200},
        summary="Start a run and answer at once (ZenML's async route)",
    )
    async def submit(
        body: request_model,  # type: ignore[valid-type]
        request: Request,
        deployment: DeploymentDep,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Same body as `/invoke`; always answers `202` with the run's `Location`."""
        request.state.invoke_mode = "async"
        run = await start_run(deployment, run_request(deployment, body), idempotency_key)
        return accepted(run, Preferences())

    return router
