"""Example: a workflow of another Temporal application calls a deployment over Nexus.

`ScoreOverNexus` scores texts with the `sentiment` deployment through its Nexus
endpoint, from whatever namespace it runs in: the `run` operation is an ordinary
warmrun run (visible at `GET /runs/{id}`, linked to this workflow in the Temporal UI),
and `get` reads its run resource. Cancelling `ScoreOverNexus` cancels the run and
waits until its pipeline has stopped.

Run it next to `warmrun dev` (which serves the sentiment example and creates the
endpoint `warmrun-sentiment`), here from a namespace of its own:

    temporal operator namespace create --namespace callers
    TEMPORAL_NAMESPACE=callers python examples/nexus_caller.py
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from warmrun.temporal import (
        GetRunInput,
        PipelineRunInput,
        WarmrunService,
        nexus_endpoint_for,
        nexus_run_id,
    )

TASK_QUEUE = "nexus-caller"
ENDPOINT = nexus_endpoint_for("sentiment")


@workflow.defn
class ScoreOverNexus:
    @workflow.run
    async def run(self, texts: list[str]) -> dict[str, Any]:
        sentiment = workflow.create_nexus_client(service=WarmrunService, endpoint=ENDPOINT)
        operation = await sentiment.start_operation(
            WarmrunService.run,
            PipelineRunInput(
                parameters={"texts": texts, "step_seconds": 0.2}, run_name="scored over Nexus"
            ),
            # Always bound an operation: Nexus retries a failing start until then.
            schedule_to_close_timeout=timedelta(minutes=10),
        )
        result = await operation
        run = await sentiment.execute_operation(
            WarmrunService.get, GetRunInput(run_id=nexus_run_id(operation))
        )
        return {"mean_score": result.outputs["mean_score"], "run": run}


async def main() -> None:
    from temporalio.worker import Worker

    from warmrun.connection import connect

    client = await connect()
    async with Worker(client, task_queue=TASK_QUEUE, workflows=[ScoreOverNexus]):
        scored = await client.execute_workflow(
            ScoreOverNexus.run,
            ["what a great day", "love it"],
            id="score-over-nexus-example",
            task_queue=TASK_QUEUE,
        )
    run = scored["run"]
    print(f"mean score {scored['mean_score']} from run {run['run_id']} ({run['status']})")
    print(f"  {run['links']['temporal_ui']}")


if __name__ == "__main__":
    asyncio.run(main())
    # The SDK's Rust threads can still be finishing when a short-lived process
    # finalizes, which may abort it at exit (temporalio/sdk-python#300). Everything is
    # done and printed by now: leave without finalizing.
    sys.stdout.flush()
    os._exit(0)
