"""A parent workflow of another Temporal application, for composition tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from warmrun.temporal import execute_child_pipeline_run


@dataclass
class OneChild:
    deployment: str
    parameters: dict[str, Any]
    run_id: str


@workflow.defn
class ParentOfOneRun:
    @workflow.run
    async def run(self, child: OneChild) -> dict[str, Any]:
        result = await execute_child_pipeline_run(
            child.deployment, child.parameters, run_id=child.run_id
        )
        return result.outputs
