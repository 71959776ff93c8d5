"""Run a deployment's pipeline from another Temporal application.

`PipelineRun` is a public contract: workflow type `PipelineRun` on task queue
`warmrun-<deployment>`, input `{"parameters": {...}, "run_name"?, "timeout"?}`,
output `{"outputs": {...}, ...}`. These helpers type it for Python apps; any SDK
can start it by name. A run started this way is an ordinary run for the REST API
(`GET /runs/{workflow id}`), and cancelling it (or its parent) stops the pipeline.

In a workflow (safe to import in the sandbox):

    from warmrun.temporal import execute_child_pipeline_run

    result = await execute_child_pipeline_run("sentiment", {"texts": ["great"]})
    result.outputs["mean_score"]

From a client:

    handle = await start_pipeline_run(client, "sentiment", {"texts": ["great"]})
    result = await handle.result()

From any namespace, as a Nexus operation (`WarmrunService`; the deployment's endpoint is
`nexus_endpoint_for(deployment)` where `warmrun dev` created it):

    warmrun = workflow.create_nexus_client(
        service=WarmrunService, endpoint=nexus_endpoint_for("sentiment")
    )
    result = await warmrun.execute_operation(
        WarmrunService.run,
        PipelineRunInput(parameters={"texts": ["great"]}),
        schedule_to_close_timeout=timedelta(hours=1),
    )

Callers in other languages use the names: service `warmrun`, operation `run` with
`PipelineRunInput` JSON (answering `PipelineRunResult` JSON) and operation `get` with
`{"run_id": ...}` (answering the run resource JSON of `GET /runs/{run_id}`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import nexusrpc
import temporalio.nexus
from temporalio import workflow

from warmrun.run import (
    NEXUS_GET_OPERATION,
    NEXUS_RUN_OPERATION,
    NEXUS_SERVICE,
    WORKFLOW_TYPE,
    GetRunInput,
    PipelineRunInput,
    PipelineRunResult,
    Progress,
    new_run_id,
    nexus_endpoint_for,
    task_queue_for,
)

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowHandle

__all__ = [
    "WORKFLOW_TYPE",
    "GetRunInput",
    "PipelineRunInput",
    "PipelineRunResult",
    "Progress",
    "WarmrunService",
    "execute_child_pipeline_run",
    "execute_pipeline_run",
    "nexus_endpoint_for",
    "nexus_run_id",
    "start_child_pipeline_run",
    "start_pipeline_run",
    "task_queue_for",
]


@nexusrpc.service(name=NEXUS_SERVICE)
class WarmrunService:
    """The Nexus service every deployment's worker handles, for typed callers.

    `run` starts an ordinary run and completes with its result; cancelling the
    operation cancels the run and (with the default cancellation type,
    `WAIT_COMPLETED`) waits until its pipeline has stopped. A run that ends badly
    fails the operation with the run's error. Bad input fails it at once with a
    non-retryable `BAD_REQUEST` whose cause, an `ApplicationError` of type
    `InvalidParameters`, lists the bad fields in `details[0]["errors"]`.

    `get` answers the run resource of a run id as JSON (parse it with
    `warmrun.resource.Run.model_validate` if you like); an unknown id is `NOT_FOUND`.
    """

    run: nexusrpc.Operation[PipelineRunInput, PipelineRunResult] = nexusrpc.Operation(
        name=NEXUS_RUN_OPERATION
    )
    get: nexusrpc.Operation[GetRunInput, dict[str, Any]] = nexusrpc.Operation(
        name=NEXUS_GET_OPERATION
    )


async def start_pipeline_run(
    client: Client,
    deployment: str,
    parameters: dict[str, Any],
    *,
    run_id: str | None = None,
    run_name: str | None = None,
    timeout: float | None = None,
    **start_options: Any,
) -> WorkflowHandle[Any, PipelineRunResult]:
    """Start a run of `deployment`'s pipeline; `start_options` go to `start_workflow`."""
    return await client.start_workflow(
        WORKFLOW_TYPE,
        PipelineRunInput(parameters=parameters, run_name=run_name, timeout=timeout),
        id=run_id or new_run_id(),
        task_queue=task_queue_for(deployment),
        result_type=PipelineRunResult,
        **start_options,
    )


async def execute_pipeline_run(
    client: Client, deployment: str, parameters: dict[str, Any], **options: Any
) -> PipelineRunResult:
    """Start a run and wait for its result (raises `WorkflowFailureError` if it fails)."""
    handle = await start_pipeline_run(client, deployment, parameters, **options)
    return await handle.result()


async def start_child_pipeline_run(
    deployment: str,
    parameters: dict[str, Any],
    *,
    run_id: str | None = None,
    run_name: str | None = None,
    timeout: float | None = None,
    **child_options: Any,
) -> workflow.ChildWorkflowHandle[Any, PipelineRunResult]:
    """From a workflow: start a run as a child; cancelling the parent cancels the run
    (and waits for the pipeline to stop, the child's default cancellation type)."""
    return await workflow.start_child_workflow(
        WORKFLOW_TYPE,
        PipelineRunInput(parameters=parameters, run_name=run_name, timeout=timeout),
        id=run_id or new_run_id(workflow.uuid4().hex),
        task_queue=task_queue_for(deployment),
        result_type=PipelineRunResult,
        **child_options,
    )


async def execute_child_pipeline_run(
    deployment: str, parameters: dict[str, Any], **options: Any
) -> PipelineRunResult:
    """From a workflow: run the pipeline as a child workflow and return its result."""
    handle = await start_child_pipeline_run(deployment, parameters, **options)
    return await handle


def nexus_run_id(operation: workflow.NexusOperationHandle[Any]) -> str:
    """The run_id of the run a started `run` operation names (from its operation
    token): what to pass to `get`, or to `GET /runs/{run_id}`."""
    if operation.operation_token is None:
        raise ValueError("the operation has not started a run (no operation token yet)")
    return temporalio.nexus.WorkflowHandle.from_token(operation.operation_token).workflow_id
