"""`POST /invoke` and `POST /submit`: start a run, answer at once or at its end.

No `from __future__ import annotations` here: the body type is built per pipeline at
start-up and FastAPI must see it as a real object in the route's signature.
"""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from temporalio.client import WorkflowFailureError
from temporalio.service import RPCError

from warmrun.api import idempotency
from warmrun.api.auth import Authenticated
from warmrun.api.dependencies import Deployment, DeploymentDep
from warmrun.api.models import (
    AcceptedRun,
    InvokeMetadata,
    InvokeRequestBase,
    InvokeResponse,
    RunStatus,
)
from warmrun.api.prefer import Preferences, parse_prefer
from warmrun.api.problems import problem_responses
from warmrun.api.run_start import StartedRun, start_run
from warmrun.api.run_state import run_ending
from warmrun.workflows.contract import PipelineRunResult

KEEPALIVE_SECONDS = 10.0

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=idempotency.MAX_KEY_LENGTH,
        pattern=idempotency.KEY_PATTERN,
        description="The same key never starts a second run of this deployment: a retry "
        "answers with the run the key already names.",
    ),
]


def accepted(run: StartedRun, preferences: Preferences) -> JSONResponse:
    body = AcceptedRun(run_id=run.run_id, created_at=run.created_at, location=run.location)
    headers = {"Location": run.location, "X-Run-Id": run.run_id}
    if applied := preferences.applied():
        headers["Preference-Applied"] = applied
    return JSONResponse(body.model_dump(mode="json"), status_code=202, headers=headers)


async def finished(
    deployment: Deployment, run: StartedRun, body: InvokeRequestBase, preferences: Preferences
) -> JSONResponse:
    """`Prefer: wait=N`: the result if the run ends within N seconds, else 202."""
    try:
        outcome = await asyncio.wait_for(_outcome(deployment, run), preferences.wait)
    except TimeoutError:
        return accepted(run, preferences)
    headers = {"X-Run-Id": run.run_id}
    if applied := preferences.applied():
        headers["Preference-Applied"] = applied
    response = _zenml_response(deployment, run, body, *outcome)
    return JSONResponse(response.model_dump(mode="json"), headers=headers)


def streamed(deployment: Deployment, run: StartedRun, body: InvokeRequestBase) -> StreamingResponse:
    """A plain sync call: the status line and `X-Run-Id` go out at once, the body when
    the run ends, with a space every `KEEPALIVE_SECONDS` meanwhile (JSON ignores it) so
    that proxies do not cut an idle connection. A caller that hangs up still knows
    the run_id, and the run goes on without it."""

    async def body_chunks() -> AsyncIterator[bytes]:
        waiting = asyncio.ensure_future(_outcome(deployment, run))
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=KEEPALIVE_SECONDS)
                if done:
                    break
                yield b" "
            try:
                response = _zenml_response(deployment, run, body, *waiting.result())
            except RPCError as err:
                response = _lost_contact(deployment, run, body, err)
            yield response.model_dump_json().encode()
        finally:
            waiting.cancel()

    return StreamingResponse(
        body_chunks(), media_type="application/json", headers={"X-Run-Id": run.run_id}
    )


async def _outcome(
    deployment: Deployment, run: StartedRun
) -> tuple[PipelineRunResult | None, BaseException | None]:
    try:
        outcome: tuple[PipelineRunResult | None, BaseException | None] = (
            await run.handle.result(),
            None,
        )
    except WorkflowFailureError as err:
        outcome = None, err.cause
    deployment.backlog.ended(run.run_id)  # only once it really ended (not on a timeout)
    return outcome


def _zenml_response(
    deployment: Deployment,
    run: StartedRun,
    body: InvokeRequestBase,
    result: PipelineRunResult | None,
    failure: BaseException | None,
) -> InvokeResponse:
    finished_at = datetime.now(UTC)
    status, error = run_ending(failure)
    return InvokeResponse(
        success=status == "succeeded",
        outputs=result.outputs if result else None,
        execution_time=(finished_at - run.created_at).total_seconds(),
        metadata=_metadata(deployment, run, body, status, finished_at),
        error=f"{error.type}: {error.message}" if error else None,
    )


def _lost_contact(
    deployment: Deployment, run: StartedRun, body: InvokeRequestBase, err: RPCError
) -> InvokeResponse:
    """The 200 is already sent when Temporal stops answering: say so in the body."""
    return InvokeResponse(
        success=False,
        outputs=None,
        metadata=_metadata(deployment, run, body, "running", None),
        error=f"lost contact with Temporal while waiting ({err.message}); the run goes on: "
        f"GET {run.location}",
    )


def _metadata(
    deployment: Deployment,
    run: StartedRun,
    body: InvokeRequestBase,
    status: RunStatus,
    finished_at: datetime | None,
) -> InvokeMetadata:
    return InvokeMetadata(
        run_id=run.run_id,
        run_name=body.run_name,
        pipeline_name=deployment.pipeline.name,
        deployment_name=deployment.name,
        parameters_used=run.parameters,
        status=status,
        created_at=run.created_at,
        finished_at=finished_at,
    )


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
        run = await start_run(deployment, body, idempotency_key, caller_waits=mode != "async")
        if mode == "wait":
            return await finished(deployment, run, body, preferences)
        if mode == "async":
            return accepted(run, preferences)
        return streamed(deployment, run, body)

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
        run = await start_run(deployment, body, idempotency_key)
        return accepted(run, Preferences())

    return router
