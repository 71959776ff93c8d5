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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from temporalio import workflow

from warmrun.run import (
    WORKFLOW_TYPE,
    PipelineRunInput,
    PipelineRunResult,
    Progress,
    new_run_id,
    task_queue_for,
)

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowHandle

__all__ = [
    "WORKFLOW_TYPE",
    "PipelineRunInput",
    "PipelineRunResult",
    "Progress",
    "execute_child_pipeline_run",
    "execute_pipeline_run",
    "start_child_pipeline_run",
    "start_pipeline_run",
    "task_queue_for",
]


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
