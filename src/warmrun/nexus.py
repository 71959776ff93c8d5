"""The deployment as a Nexus service: other Temporal applications call its pipeline.

Every worker of a deployment handles the Nexus service `warmrun` on the deployment's
task queue, an entry point like the HTTP API that translates into the same run
services:

- `run` is a workflow-run operation: it starts an ordinary run (the `RunStart` the
  API builds, the same checks and backlog), and Temporal completes the caller's
  operation with the run's `PipelineRunResult` when the run ends. Cancelling the
  operation cancels the run, which ends once its pipeline has stopped. The run_id is
  derived from the Nexus request id, so a retried start names the same run.
- `get` is a synchronous operation answering the run resource of a run id, the JSON
  of `GET /runs/{run_id}`.

What callers import (the service definition, typed) is `warmrun.temporal.WarmrunService`.
The handler takes the `run` input as plain JSON and validates it strictly, as the API
validates a body: the SDK's dataclass conversion would drop a misspelt field silently.
Errors a caller can act on fail the operation at once (`BAD_REQUEST`, the bad fields
listed in the error's details, like the API's 422); a full backlog or a replica
shutting down are retryable, so the caller's server retries the start.

Endpoints route callers to the service: `warmrun dev` creates `warmrun-<deployment>`
(`ensure_nexus_endpoint`); elsewhere an operator creates it (see the README).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import nexusrpc.handler
import temporalio.nexus
from nexusrpc import HandlerError, HandlerErrorType
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from temporalio.api.common.v1 import Payload
from temporalio.api.nexus.v1 import EndpointSpec, EndpointTarget
from temporalio.api.operatorservice.v1 import CreateNexusEndpointRequest
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from warmrun.deployment import Deployment
from warmrun.pipeline import Pipeline
from warmrun.run import (
    INVALID_PARAMETERS_ERROR,
    NEXUS_GET_OPERATION,
    NEXUS_RUN_OPERATION,
    NEXUS_SERVICE,
    GetRunInput,
    PipelineRunResult,
    WebhookEvent,
    nexus_endpoint_for,
    run_id_for_request,
    task_queue_for,
)
from warmrun.services.errors import (
    BacklogFull,
    CallbackRefused,
    ReplicaDraining,
    RunNotFound,
    RunServiceError,
    WebhooksDisabled,
)
from warmrun.services.read import read_run
from warmrun.services.start import RunRequest, check_request, run_start, start_admitted
from warmrun.workflows import PipelineRun

logger = logging.getLogger(__name__)


@nexusrpc.handler.service_handler(name=NEXUS_SERVICE)
class RunsNexusHandler:
    """The `warmrun` Nexus service of one deployment."""

    def __init__(self, deployment: Deployment) -> None:
        self._deployment = deployment
        self._input_model = run_input_model(deployment.pipeline, deployment.settings.max_timeout)

    @temporalio.nexus.workflow_run_operation(name=NEXUS_RUN_OPERATION)
    async def run(
        self, ctx: temporalio.nexus.WorkflowRunOperationContext, input: dict[str, Any]
    ) -> temporalio.nexus.WorkflowHandle[PipelineRunResult]:
        """Start a run with `PipelineRunInput` JSON; its result completes the operation."""
        deployment = self._deployment
        request = self._request(input)
        run_id = run_id_for_request(deployment.name, ctx.request_id)
        start = run_start(deployment, request, run_id)
        with _as_handler_errors():
            await check_request(deployment, request)
            # Through the operation's context, not the client: the run then carries
            # the caller's completion callback and links (the Temporal UI shows
            # both ends), and the Nexus request id as its start's request id.
            return await start_admitted(
                deployment,
                run_id,
                lambda: ctx.start_workflow(PipelineRun.run, start.input, **start.options()),
            )

    @nexusrpc.handler.sync_operation(name=NEXUS_GET_OPERATION)
    async def get(
        self, ctx: nexusrpc.handler.StartOperationContext, input: GetRunInput
    ) -> dict[str, Any]:
        """The run resource of `run_id`, as `GET /runs/{run_id}` answers it."""
        with _as_handler_errors():
            run = await read_run(self._deployment, input.run_id)
        return run.model_dump(mode="json")

    def _request(self, input: dict[str, Any]) -> RunRequest:
        """The run `input` asks for, validated as the API validates a body."""
        try:
            given = self._input_model.model_validate(input)
        except ValidationError as err:
            cause = invalid_input(
                [
                    {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
                    for error in err.errors()
                ]
            )
            raise bad_request(cause) from cause
        parameters = given.parameters
        if parameters is None:  # the pipeline takes no required parameters
            parameters = self._deployment.pipeline.parameters_model()
        return RunRequest(
            parameters=parameters.model_dump(mode="json"),
            run_name=given.run_name,
            timeout=given.timeout,
            callback_url=given.callback_url,
            callback_events=[event.value for event in given.callback_events]
            if given.callback_events
            else None,
        )


def run_input_model(pipeline: Pipeline, max_timeout: float) -> type[BaseModel]:
    """`PipelineRunInput` as the `run` operation accepts it: parameters typed by the
    pipeline's signature and the other fields bounded as the API bounds them; unknown
    fields are refused. `policy` is the deployment's own, so a caller leaves it null."""
    parameters = pipeline.parameters_model
    required = any(field.is_required() for field in parameters.model_fields.values())
    annotation: Any = parameters if required else parameters | None
    return create_model(
        "RunOperationInput",
        __config__=ConfigDict(extra="forbid"),
        parameters=(annotation, ... if required else None),
        run_name=(str | None, Field(None, max_length=255)),
        timeout=(float | None, Field(None, gt=0, le=max_timeout)),
        callback_url=(str | None, Field(None, max_length=2048)),
        callback_events=(list[WebhookEvent] | None, Field(None, min_length=1, max_length=6)),
        policy=(None, None),
    )


def invalid_input(errors: list[dict[str, Any]]) -> ApplicationError:
    """What a caller gets to act on: the bad fields, in the error's details as the
    API's 422 lists them (`errors`: `loc`, `msg`, `type`)."""
    where = ", ".join(".".join(str(part) for part in error["loc"]) for error in errors)
    return ApplicationError(
        f"invalid input: {where}" if where else "invalid input",
        {"errors": errors},
        type=INVALID_PARAMETERS_ERROR,
        non_retryable=True,
    )


def bad_request(cause: ApplicationError) -> HandlerError:
    """Nexus's own "bad request": never retried, so the operation fails at once (any
    other exception would be retried until the caller's timeout). Raise it `from` its
    cause, which carries the details across to the caller."""
    return HandlerError(cause.message, type=HandlerErrorType.BAD_REQUEST)


def handler_error(error: RunServiceError) -> HandlerError:
    """The Nexus answer to what a run service refused. Retryable where HTTP says 429
    or 503, so the caller's server retries the start later."""
    detail = str(error)
    match error:
        case RunNotFound():
            return HandlerError(detail, type=HandlerErrorType.NOT_FOUND)
        case BacklogFull():
            return HandlerError(detail, type=HandlerErrorType.RESOURCE_EXHAUSTED)
        case ReplicaDraining():
            return HandlerError(detail, type=HandlerErrorType.UNAVAILABLE)
    raise TypeError(f"no Nexus answer for {type(error).__name__}") from error


@contextmanager
def _as_handler_errors() -> Iterator[None]:
    """The one place turning what the run services refuse into Nexus errors."""
    try:
        yield
    except (CallbackRefused, WebhooksDisabled) as err:
        cause = invalid_input([{"loc": ["callback_url"], "msg": str(err), "type": "value_error"}])
        raise bad_request(cause) from cause
    except RunServiceError as err:
        raise handler_error(err) from err


async def ensure_nexus_endpoint(client: Client, deployment: str) -> str:
    """Create the endpoint `warmrun-<deployment>` routing to the deployment's task queue
    in the client's namespace; one that exists already is left as it is. Returns its
    name."""
    name = nexus_endpoint_for(deployment)
    spec = EndpointSpec(
        name=name,
        description=_endpoint_description(deployment),
        target=EndpointTarget(
            worker=EndpointTarget.Worker(
                namespace=client.namespace, task_queue=task_queue_for(deployment)
            )
        ),
    )
    try:
        await client.operator_service.create_nexus_endpoint(CreateNexusEndpointRequest(spec=spec))
    except RPCError as err:
        if err.status != RPCStatusCode.ALREADY_EXISTS:
            raise
        logger.info("Nexus endpoint %s exists already; left as it is", name)
    return name


def _endpoint_description(deployment: str) -> Payload:
    """Markdown the Temporal UI shows with the endpoint (a JSON string payload, as the
    CLI's `--description` sends it)."""
    return DataConverter.default.payload_converter.to_payload(
        f"warmrun deployment `{deployment}`: Nexus service `{NEXUS_SERVICE}`, operations "
        f"`{NEXUS_RUN_OPERATION}` (a run: `PipelineRunInput` → `PipelineRunResult`) and "
        f"`{NEXUS_GET_OPERATION}` (the run resource of a run id)."
    )
