"""Listing a deployment's runs, from Temporal visibility.

Visibility cannot tell queued from running nor a timeout from a failure, so open runs
are described and closed ones read their memo; a page filtered on such a status may
therefore hold fewer than `limit` runs (follow `next_page_token`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from temporalio.client import WorkflowExecution, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from warmrun.deployment import Deployment
from warmrun.resource import Run
from warmrun.run import RunMemo, RunStatus, runs_query
from warmrun.services.errors import InvalidPageToken, RunNotFound
from warmrun.services.read import closed_as, describe_run, links_of, run_of, status_when_closed


@dataclass
class RunPage:
    runs: list[Run]
    next_page_token: bytes | None


async def list_runs(
    deployment: Deployment, status: RunStatus | None, limit: int, page_token: bytes | None
) -> RunPage:
    """A page of this deployment's runs: open runs first, newest first, then ended
    runs, most recently ended first (visibility's order)."""
    executions = deployment.client.list_workflows(
        runs_query(deployment.task_queue, status), page_size=limit, next_page_token=page_token
    )
    try:
        await executions.fetch_next_page()
    except RPCError as err:
        # A token the server cannot read is the caller's: visibility answers "invalid
        # argument" or, for some malformed tokens, "unknown".
        if page_token is not None and err.status in (
            RPCStatusCode.INVALID_ARGUMENT,
            RPCStatusCode.UNKNOWN,
        ):
            raise InvalidPageToken() from None
        raise
    page = list(executions.current_page or [])
    runs = await asyncio.gather(*(_listed(deployment, execution) for execution in page))
    return RunPage(
        runs=[run for run in runs if run is not None and (status is None or run.status == status)],
        next_page_token=executions.next_page_token or None,
    )


async def _listed(deployment: Deployment, execution: WorkflowExecution) -> Run | None:
    if execution.status == WorkflowExecutionStatus.RUNNING:
        try:
            description = await describe_run(deployment, execution.id)
        except RunNotFound:  # deleted meanwhile
            return None
        return await run_of(deployment, description)
    memo = RunMemo.from_memo(await execution.memo(), closed_as(execution.status))
    return Run(
        run_id=execution.id,
        run_name=memo.run_name,
        pipeline_name=deployment.pipeline.name,
        deployment_name=deployment.name,
        status=status_when_closed(execution.status, memo),
        created_at=execution.start_time,
        finished_at=execution.close_time,
        links=links_of(deployment, execution.id),
        zenml_run_id=memo.zenml_run.run_id if memo.zenml_run else None,
    )
