"""Starting a run: its run_id, its workflow, and what makes a start safe to retry."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import WorkflowExecutionDescription, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from warmrun.api import idempotency
from warmrun.api.dependencies import Deployment
from warmrun.api.models import InvokeRequestBase
from warmrun.api.problems import Problem
from warmrun.api.run_state import RunNotFound, describe_run
from warmrun.webhooks import WebhookTargetRefused, resolve_webhook_target
from warmrun.workflows import PipelineRun
from warmrun.workflows.contract import PipelineRunInput, PipelineRunResult

DRAINING_RETRY_AFTER = 2
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
    """URL-safe and unguessable (128 random bits): knowing one run's id tells nothing
    of another's. The prefix keeps it from starting with `-`, which CLIs read as an
    option."""
    return f"run_{secrets.token_urlsafe(16)}"


async def start_run(
    deployment: Deployment,
    body: InvokeRequestBase,
    idempotency_key: str | None = None,
    *,
    caller_waits: bool = False,
) -> StartedRun:
    """Start the run's workflow (or find the one its Idempotency-Key names); once this
    returns, the run exists durably on the Temporal server.

    A caller that waits for the result gets eager start (the first workflow task runs
    here, saving a round trip); an async accept does not, since running that task inline
    would only delay the 202."""
    if deployment.draining:
        raise Problem(
            503,
            "shutting_down",
            "this replica is shutting down and takes no new runs; retry (another replica)",
            headers={"Retry-After": str(DRAINING_RETRY_AFTER)},
        )
    parameters = _parameters(deployment, body)
    if body.callback_url:
        await _check_callback(deployment, body.callback_url)
    if idempotency_key is None:
        async with deployment.backlog.admission() as admission:
            run = await _start(deployment, body, parameters, new_run_id(), None, eager=caller_waits)
            admission.started(run.run_id)
            return run

    run_id = idempotency.idempotent_run_id(deployment.name, idempotency_key)
    fingerprint = idempotency.request_fingerprint(body, parameters)
    existing = await _existing(deployment, run_id)
    if existing is not None and not _expired(deployment, existing):
        return await _same_request(deployment, existing, fingerprint, parameters)
    try:
        async with deployment.backlog.admission() as admission:
            run = await _start(
                deployment,
                body,
                parameters,
                run_id,
                fingerprint,
                replace=existing is not None,
                eager=caller_waits,
            )
            admission.started(run_id)
    except WorkflowAlreadyStartedError:  # a duplicate finished in between
        existing = await describe_run(deployment, run_id)
        return await _same_request(deployment, existing, fingerprint, parameters)
    # A concurrent duplicate may have created the workflow first: ours then joined it.
    return await _same_request(
        deployment, await describe_run(deployment, run_id), fingerprint, parameters, run
    )


async def _start(
    deployment: Deployment,
    body: InvokeRequestBase,
    parameters: dict[str, Any],
    run_id: str,
    fingerprint: str | None,
    *,
    replace: bool = False,
    eager: bool = False,
) -> StartedRun:
    settings = deployment.settings
    budget = body.timeout or settings.default_timeout
    pipeline_name = deployment.pipeline.name
    memo: dict[str, Any] = {"pipeline_name": pipeline_name, "run_name": body.run_name}
    if body.callback_url:
        memo["callback_url"] = body.callback_url
        memo["callback_events"] = body.callback_events
    if fingerprint:
        memo[idempotency.FINGERPRINT_MEMO] = fingerprint
    created_at = datetime.now(UTC)
    handle = await deployment.client.start_workflow(
        PipelineRun.run,
        PipelineRunInput(
            parameters=parameters,
            run_name=body.run_name,
            timeout=budget,
            callback_url=body.callback_url,
            callback_events=list(dict.fromkeys(body.callback_events or ())) or None,
            policy=deployment.run_policy,
        ),
        id=run_id,
        task_queue=deployment.task_queue,
        # A backstop only: the workflow's own timer ends the run at its budget and waits
        # for the pipeline to stop; this bounds a run whose worker never answers again.
        execution_timeout=timedelta(seconds=budget + settings.cancel_grace * 2),
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=(
            WorkflowIDReusePolicy.ALLOW_DUPLICATE
            if replace or fingerprint is None
            else WorkflowIDReusePolicy.REJECT_DUPLICATE
        ),
        memo=memo,
        static_summary=f"{pipeline_name}: {body.run_name}" if body.run_name else pipeline_name,
        static_details=_parameters_details(parameters),
        request_eager_start=eager and deployment.worker is not None,
    )
    return StartedRun(run_id, created_at, parameters, handle)


async def _existing(deployment: Deployment, run_id: str) -> WorkflowExecutionDescription | None:
    try:
        return await describe_run(deployment, run_id)
    except RunNotFound:
        return None


def _expired(deployment: Deployment, run: WorkflowExecutionDescription) -> bool:
    """An ended run stops answering for its key after `WARMRUN_IDEMPOTENCY_RETENTION`."""
    if run.close_time is None:
        return False
    retention = timedelta(seconds=deployment.settings.idempotency_retention)
    return datetime.now(UTC) - run.close_time > retention


async def _same_request(
    deployment: Deployment,
    run: WorkflowExecutionDescription,
    fingerprint: str,
    parameters: dict[str, Any],
    started: StartedRun | None = None,
) -> StartedRun:
    memo = await run.memo()
    if memo.get(idempotency.FINGERPRINT_MEMO) != fingerprint:
        raise idempotency.key_reused(run.id)
    if started is not None and started.handle.result_run_id == run.run_id:
        return started
    handle = deployment.client.get_workflow_handle_for(PipelineRun.run, run.id, run_id=run.run_id)
    return StartedRun(run.id, run.start_time, parameters, handle)


async def _check_callback(deployment: Deployment, url: str) -> None:
    """Refuse at submit what can be known now; delivery checks the target again."""
    settings = deployment.settings
    if not settings.webhook_secrets():
        raise Problem(
            422,
            "webhooks_disabled",
            "this deployment has no WARMRUN_WEBHOOK_SECRET, so it sends no webhooks",
        )
    try:
        await resolve_webhook_target(url, settings.webhook_allowed_host_list())
    except WebhookTargetRefused as err:
        raise Problem(
            422,
            "callback_url_refused",
            str(err),
            errors=[{"loc": ["body", "callback_url"], "msg": str(err), "type": "value_error"}],
        ) from None


def _parameters(deployment: Deployment, body: InvokeRequestBase) -> dict[str, Any]:
    """The parameters as the pipeline will see them, defaults included."""
    given = getattr(body, "parameters", None)
    model = given if given is not None else deployment.pipeline.parameters_model()
    return model.model_dump(mode="json")


def _parameters_details(parameters: dict[str, Any]) -> str:
    text = json.dumps(parameters, indent=2, sort_keys=True)
    if len(text) > STATIC_DETAILS_LIMIT:
        text = text[: STATIC_DETAILS_LIMIT - 1] + "…"
    return f"Parameters:\n```json\n{text}\n```"
