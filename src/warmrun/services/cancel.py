"""Cancelling a run: Temporal workflow cancellation.

The run ends `cancelled` only once its pipeline has stopped (the workflow waits for
its activity: WAIT_CANCELLATION_COMPLETED); until then it reads as it did, with
`cancel_requested`.
"""

from __future__ import annotations

from temporalio.service import RPCError, RPCStatusCode

from warmrun.deployment import Deployment
from warmrun.resource import Run
from warmrun.services.errors import RunAlreadyEnded
from warmrun.services.read import read_run


async def cancel_run(deployment: Deployment, run_id: str) -> Run:
    """Ask the run to stop; the run as it reads now, cancellation requested.

    Raises `RunNotFound`, or `RunAlreadyEnded` (with the ended run) if it is over."""
    run = await read_run(deployment, run_id)
    if run.is_terminal:
        raise RunAlreadyEnded(run)
    try:
        await deployment.client.get_workflow_handle(run_id).cancel()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        # It ended between the read and the cancel ("workflow execution already completed").
        raise RunAlreadyEnded(await read_run(deployment, run_id)) from None
    return run.model_copy(update={"cancel_requested": True})
