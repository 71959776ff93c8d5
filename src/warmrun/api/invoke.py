"""`POST /invoke` and `POST /submit`: start a run, answer at once or at its end.

No `from __future__ import annotations` here: the body type is built per pipeline at
start-up and FastAPI must see it as a real object in the route's signature.
"""

import asyncio
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from temporalio.client import WorkflowFailureError, WorkflowHandle

from warmrun.api.dependencies import Deployment, DeploymentDep
from warmrun.api.models import AcceptedRun, InvokeMetadata, InvokeRequestBase, InvokeResponse
from warmrun.api.prefer import Preferences, parse_prefer
from warmrun.api.problems import validation_problem
from warmrun.api.run_state import run_ending
from warmrun.workflows import PipelineRun
from warmrun.workflows.contract import PipelineRunInput, PipelineRunResult

STATIC_DETAILS_LIMIT = 4000
"""Characters of the parameters shown in the Temporal UI's details of a run."""


@dataclass
class StartedRun:
    run_id: str
    created_at: datetime
    parameters: dict[str, Any]
    handle: WorkflowHandle[PipelineRun, PipelineRunResult]

    @property
    def location(self) -> str:
        return f"/runs/{self.run_id}"


def new_run_id() -> str:
    """URL-safe and unguessable: knowing one run's id tells nothing of another's."""
    return secrets.token_urlsafe(16)


async def start_run(deployment: Deployment, body: InvokeRequestBase) -> StartedRun:
    """Start the run's workflow; once this returns, the run exists durably."""
    settings = deployment.settings
    if body.timeout is not None and body.timeout > settings.max_timeout:
        raise validation_problem(
            [
                {
                    "loc": ["body", "timeout"],
                    "msg": f"must be at most {settings.max_timeout:g} seconds",
                    "type": "less_than_equal",
                }
            ]
        )
    parameters_model = getattr(body, "parameters", None)
    parameters = (
        parameters_model.model_dump(mode="json")
        if parameters_model is not None
        else deployment.pipeline.parameters_model().model_dump(mode="json")
    )
    budget = body.timeout or settings.default_timeout
    run_id = new_run_id()
    created_at = datetime.now(UTC)
    pipeline_name = deployment.pipeline.name
    handle = await deployment.client.start_workflow(
        PipelineRun.run,
        PipelineRunInput(parameters=parameters, run_name=body.run_name, timeout=budget),
        id=run_id,
        task_queue=deployment.task_queue,
        # A backstop only: the workflow's own timer ends the run at its budget and waits
        # for the pipeline to stop; this bounds a run whose worker never answers again.
        execution_timeout=timedelta(seconds=budget + settings.cancel_grace * 2),
        memo={"pipeline_name": pipeline_name, "run_name": body.run_name},
        static_summary=f"{pipeline_name}: {body.run_name}" if body.run_name else pipeline_name,
        static_details=_parameters_details(parameters),
        request_eager_start=deployment.worker is not None,
    )
    return StartedRun(run_id, created_at, parameters, handle)


def _parameters_details(parameters: dict[str, Any]) -> str:
    text = json.dumps(parameters, indent=2, sort_keys=True)
    if len(text) > STATIC_DETAILS_LIMIT:
        text = text[: STATIC_DETAILS_LIMIT - 1] + "…"
    return f"Parameters:\n```json\n{text}\n```"


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
    router = APIRouter(tags=["invoke"])
    answers: dict[int | str, dict[str, Any]] = {
        200: {"model": InvokeResponse, "description": "The run ended (successfully or not)."},
        202: {"model": AcceptedRun, "description": "The run is accepted; poll `Location`."},
    }

    @router.post(
        "/invoke",
        response_model=None,
        responses=answers,
        summary="Run the pipeline (sync by default, async on request)",
    )
    async def invoke(
        body: request_model, request: Request, deployment: DeploymentDep
    ) -> JSONResponse:  # type: ignore[valid-type]
        """Start a run. Without `async` or `Prefer: respond-async` the answer waits for
        the run's end (ZenML's contract); the run goes on even if the caller hangs up."""
        preferences = parse_prefer(request.headers.getlist("prefer"))
        run = await start_run(deployment, body)
        if (body.async_ or preferences.respond_async) and preferences.wait is None:
            return accepted(run, preferences)
        return await finished(deployment, run, body, preferences)

    @router.post(
        "/submit",
        response_model=None,
        status_code=202,
        responses={202: answers[202]},
        summary="Start a run and answer at once (ZenML's async route)",
    )
    async def submit(body: request_model, deployment: DeploymentDep) -> JSONResponse:  # type: ignore[valid-type]
        """Same body as `/invoke`; always answers `202` with the run's `Location`."""
        run = await start_run(deployment, body)
        return accepted(run, Preferences())

    return router
