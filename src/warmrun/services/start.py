"""Starting a run: its run_id, its workflow, and what makes a start safe to retry.

The HTTP API starts runs with `start_run`; the Nexus `run` operation builds the same
`RunStart` (`run_start`), passes the same checks (`check_request`) and the same
backlog (`start_admitted`), and starts it through its operation context.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pydantic_core
from temporalio.client import WorkflowExecutionDescription
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from warmrun.deployment import Deployment
from warmrun.run import PipelineRunInput, RunMemo, RunStatus, new_run_id, run_summary
from warmrun.services import idempotency
from warmrun.services.errors import (
    BacklogFull,
    CallbackRefused,
    IdempotencyKeyReused,
    ReplicaDraining,
    RunNotFound,
    WebhooksDisabled,
)
from warmrun.services.read import closed_as, describe_run, status_of
from warmrun.webhooks import WebhookTargetRefused, resolve_webhook_target
from warmrun.workflows import PipelineRun

DRAINING_RETRY_AFTER = 2
STATIC_DETAILS_LIMIT = 4000
"""Characters of the parameters shown in the Temporal UI's details of a run."""

T = TypeVar("T")


@dataclass(frozen=True)
class RunRequest:
    """What a caller asks of a new run, validated: `parameters` as the pipeline will
    see them (defaults filled)."""

    parameters: dict[str, Any]
    run_name: str | None = None
    timeout: float | None = None
    callback_url: str | None = None
    callback_events: list[str] | None = None


@dataclass
class StartedRun:
    """A run that exists durably on the Temporal server."""

    run_id: str
    created_at: datetime
    request: RunRequest
    workflow_run_id: str | None = None
    """Temporal's id of this execution of the run's workflow."""
    status: RunStatus = RunStatus.QUEUED
    """Queued for a run just started; what it was for a run an Idempotency-Key named."""

    @property
    def location(self) -> str:
        return f"/runs/{self.run_id}"


async def start_run(
    deployment: Deployment,
    request: RunRequest,
    idempotency_key: str | None = None,
    *,
    caller_waits: bool = False,
) -> StartedRun:
    """Start the run's workflow (or find the one its Idempotency-Key names); once this
    returns, the run exists durably on the Temporal server.

    A caller that waits for the result gets eager start (the first workflow task runs
    here, saving a round trip) while this replica's version is current, as eager start
    bypasses the routing of new runs to the current version; an async accept does not,
    since running that task inline would only delay the 202."""
    await check_request(deployment, request)
    if idempotency_key is None:
        async with deployment.backlog.admission() as admission:
            run = await _start(deployment, request, new_run_id(), None, eager=caller_waits)
            admission.started(run.run_id)
            return run

    run_id = idempotency.idempotent_run_id(deployment.name, idempotency_key)
    fingerprint = idempotency.request_fingerprint(request)
    existing = await _existing(deployment, run_id)
    if existing is not None and not _expired(deployment, existing):
        return await _same_request(existing, fingerprint, request)
    try:
        async with deployment.backlog.admission() as admission:
            run = await _start(
                deployment,
                request,
                run_id,
                fingerprint,
                replace=existing is not None,
                eager=caller_waits,
            )
            admission.started(run_id)
    except WorkflowAlreadyStartedError:  # a duplicate finished in between
        existing = await describe_run(deployment, run_id)
        return await _same_request(existing, fingerprint, request)
    # A concurrent duplicate may have created the workflow first: ours then joined it.
    return await _same_request(await describe_run(deployment, run_id), fingerprint, request, run)


@dataclass(frozen=True)
class RunStart:
    """How a run's workflow is started: its input and its start options. Every entry
    point starts runs from one (the HTTP API through its client, the Nexus `run`
    operation through its operation context), so a run reads the same in the API, its
    memo and the Temporal UI however it was started."""

    input: PipelineRunInput
    run_id: str
    task_queue: str
    execution_timeout: timedelta
    id_reuse_policy: WorkflowIDReusePolicy
    memo: dict[str, Any]
    static_summary: str
    static_details: str

    def options(self) -> dict[str, Any]:
        """Keyword arguments of `start_workflow`, a client's or a Nexus context's."""
        return {
            "id": self.run_id,
            "task_queue": self.task_queue,
            "execution_timeout": self.execution_timeout,
            # A second start of a run that is going on joins it: a concurrent
            # Idempotency-Key duplicate, or a Nexus start retried with its request id.
            "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
            "id_reuse_policy": self.id_reuse_policy,
            "memo": self.memo,
            "static_summary": self.static_summary,
            "static_details": self.static_details,
        }


def run_start(
    deployment: Deployment,
    request: RunRequest,
    run_id: str,
    *,
    fingerprint: str | None = None,
    replace: bool = False,
) -> RunStart:
    """The start of run `run_id` for `request`, under the deployment's policy.
    `fingerprint` is an Idempotency-Key's request fingerprint: with it, an ended run
    of that id is not started again unless `replace` says its key expired."""
    settings = deployment.settings
    policy = deployment.run_policy
    budget = policy.budget(request.timeout)
    memo = RunMemo(
        pipeline_name=policy.pipeline_name,
        run_name=request.run_name,
        callback_url=request.callback_url,
        callback_events=request.callback_events,
        request_fingerprint=fingerprint,
    )
    return RunStart(
        input=PipelineRunInput(
            parameters=request.parameters,
            run_name=request.run_name,
            timeout=budget,
            callback_url=request.callback_url,
            callback_events=list(dict.fromkeys(request.callback_events or ())) or None,
            policy=policy,
        ),
        run_id=run_id,
        task_queue=deployment.task_queue,
        # A backstop only: the workflow's own timer ends the run at its budget and waits
        # for the pipeline to stop; this bounds a run whose worker never answers again.
        execution_timeout=timedelta(seconds=budget + settings.cancel_grace * 2),
        id_reuse_policy=(
            WorkflowIDReusePolicy.ALLOW_DUPLICATE
            if replace or fingerprint is None
            else WorkflowIDReusePolicy.REJECT_DUPLICATE
        ),
        memo=memo.to_memo(),
        static_summary=run_summary(policy.pipeline_name, request.run_name),
        static_details=_parameters_details(request.parameters),
    )


async def check_request(deployment: Deployment, request: RunRequest) -> None:
    """Refuse at once what would not start well: a start on a replica shutting down,
    a callback_url that may not be called."""
    if deployment.draining:
        raise ReplicaDraining(DRAINING_RETRY_AFTER)
    if request.callback_url:
        await _check_callback(deployment, request.callback_url)


async def start_admitted(
    deployment: Deployment, run_id: str, start: Callable[[], Awaitable[T]]
) -> T:
    """Start a run whose id the caller derived (from a Nexus request id) once the
    backlog lets it in. A full backlog does not refuse a run that exists already: that
    start is a retry of one that got in, and refusing it would keep its caller
    retrying while the run goes on."""
    try:
        async with deployment.backlog.admission() as admission:
            started = await start()
            admission.started(run_id)
            return started
    except BacklogFull:
        if await _existing(deployment, run_id) is None:
            raise
    return await start()


async def _start(
    deployment: Deployment,
    request: RunRequest,
    run_id: str,
    fingerprint: str | None,
    *,
    replace: bool = False,
    eager: bool = False,
) -> StartedRun:
    start = run_start(deployment, request, run_id, fingerprint=fingerprint, replace=replace)
    created_at = datetime.now(UTC)
    handle = await deployment.client.start_workflow(
        PipelineRun.run,
        start.input,
        **start.options(),
        request_eager_start=eager and await deployment.may_start_eagerly(),
    )
    return StartedRun(run_id, created_at, request, handle.result_run_id)


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
    run: WorkflowExecutionDescription,
    fingerprint: str,
    request: RunRequest,
    started: StartedRun | None = None,
) -> StartedRun:
    """The run the key names, if it was started by the same request."""
    memo = RunMemo.from_memo(await run.memo(), closed_as(run.status))
    if memo.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused(run.id)
    if started is not None and started.workflow_run_id == run.run_id:
        return started
    return StartedRun(run.id, run.start_time, request, run.run_id, status=status_of(run, memo))


async def _check_callback(deployment: Deployment, url: str) -> None:
    """Refuse at submit what can be known now; delivery checks the target again."""
    settings = deployment.settings
    if not settings.webhook_secrets():
        raise WebhooksDisabled()
    try:
        await resolve_webhook_target(url, settings.webhook_allowed_host_list())
    except WebhookTargetRefused as err:
        raise CallbackRefused(str(err)) from None


def _parameters_details(parameters: dict[str, Any]) -> str:
    text = pydantic_core.to_json(parameters, indent=2).decode()
    if len(text) > STATIC_DETAILS_LIMIT:
        text = text[: STATIC_DETAILS_LIMIT - 1] + "…"
    return f"Parameters:\n```json\n{text}\n```"
