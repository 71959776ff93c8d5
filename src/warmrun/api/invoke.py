"""`POST /invoke` and `POST /submit`: start a run, answer at once or at its end.

No `from __future__ import annotations` here: the body type is built per pipeline at
start-up and FastAPI must see it as a real object in the route's signature.
"""

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from temporalio.client import WorkflowFailureError

from warmrun.api import idempotency
from warmrun.api.auth import Authenticated
from warmrun.api.dependencies import Deployment, DeploymentDep
from warmrun.api.models import AcceptedRun, InvokeMetadata, InvokeRequestBase, InvokeResponse
from warmrun.api.prefer import Preferences, parse_prefer
from warmrun.api.problems import problem_responses
from warmrun.api.run_start import StartedRun, start_run
from warmrun.api.run_state import run_ending
from warmrun.workflows.contract import PipelineRunResult

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
    """Wait for the run's end (bounded by `Prefer: wait`) and answer ZenML's way."""
    try:
        result: PipelineRunResult | None = await asyncio.wait_for(
            run.handle.result(), preferences.wait
        )
        failure: BaseException | None = None
    except TimeoutError:
        return accepted(run, preferences)
    except WorkflowFailureError as err:
        result, failure = None, err.cause
    finished_at = datetime.now(UTC)
    status, error = run_ending(failure)
    response = InvokeResponse(
        success=status == "succeeded",
        outputs=result.outputs if result else None,
        execution_time=(finished_at - run.created_at).total_seconds(),
        metadata=InvokeMetadata(
            run_id=run.run_id,
            run_name=body.run_name,
            pipeline_name=deployment.pipeline.name,
            deployment_name=deployment.name,
            parameters_used=run.parameters,
            status=status,
            created_at=run.created_at,
            finished_at=finished_at,
        ),
        error=f"{error.type}: {error.message}" if error else None,
    )
    headers = {"X-Run-Id": run.run_id}
    if applied := preferences.applied():
        headers["Preference-Applied"] = applied
    return JSONResponse(response.model_dump(mode="json"), headers=headers)


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
    ) -> JSONResponse:
        """Start a run. Without `async` or `Prefer: respond-async` the answer waits for
        the run's end (ZenML's contract); the run goes on even if the caller hangs up."""
        preferences = parse_prefer(request.headers.getlist("prefer"))
        run = await start_run(deployment, body, idempotency_key)
        if (body.async_ or preferences.respond_async) and preferences.wait is None:
            return accepted(run, preferences)
        return await finished(deployment, run, body, preferences)

    @router.post(
        "/submit",
        response_model=None,
        status_code=202,
        responses={code: answer for code, answer in answers.items() if code != 200},
        summary="Start a run and answer at once (ZenML's async route)",
    )
    async def submit(
        body: request_model,  # type: ignore[valid-type]
        deployment: DeploymentDep,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Same body as `/invoke`; always answers `202` with the run's `Location`."""
        run = await start_run(deployment, body, idempotency_key)
        return accepted(run, Preferences())

    return router
