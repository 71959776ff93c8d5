"""Example: another Temporal application composing warmrun runs as child workflows.

`ScoreBatches` scores several batches of texts with the `sentiment` deployment, one
`PipelineRun` child per batch. Each child is an ordinary warmrun run (visible at
`GET /runs/{id}` and in the UI under its parent); cancelling `ScoreBatches` cancels the
child in flight, which stops its pipeline.

Run it next to `warmrun dev` (which serves the sentiment example):

    python examples/batch_scoring.py
"""

from __future__ import annotations

import asyncio
import os
import sys

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from warmrun.temporal import execute_child_pipeline_run

TASK_QUEUE = "batch-scoring"


@workflow.defn
class ScoreBatches:
    @workflow.run
    async def run(self, batches: list[list[str]]) -> list[float]:
        scores = []
        for number, texts in enumerate(batches, start=1):
            result = await execute_child_pipeline_run(
                "sentiment",
                {"texts": texts, "step_seconds": 0.2},
                run_name=f"batch {number} of {len(batches)}",
            )
            scores.append(result.outputs["mean_score"])
        return scores


async def main() -> None:
    from temporalio.worker import Worker

    from warmrun.connection import connect

    client = await connect()
    async with Worker(client, task_queue=TASK_QUEUE, workflows=[ScoreBatches]):
        scores = await client.execute_workflow(
            ScoreBatches.run,
            [["what a great day", "love it"], ["this is awful"]],
            id="score-batches-example",
            task_queue=TASK_QUEUE,
        )
    print(scores)


if __name__ == "__main__":
    asyncio.run(main())
    # The SDK's Rust threads can still be finishing when a short-lived process
    # finalizes, which may abort it at exit (temporalio/sdk-python#300). Everything is
    # done and printed by now: leave without finalizing.
    sys.stdout.flush()
    os._exit(0)
