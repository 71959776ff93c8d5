"""The raw-Temporal side of the benchmark: one workflow that runs one noop activity.

This is what an application written directly against the Temporal SDK would do for
the same job, so `warmrun / raw` ratios isolate warmrun's own overhead (HTTP, FastAPI,
its richer `PipelineRun` workflow). It lives in its own importable module because the
workflow sandbox re-imports the workflow's module by name, for every run; a top-level
module (`dev/bench/__init__.py` puts this folder on sys.path) has no parent packages
for it to re-import too.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

WORKFLOW_NAME = "RawNoop"
ACTIVITY_NAME = "raw_noop"


@dataclass
class RawNoopInput:
    """Same shape of payload as a warmrun run: parameters plus an optional name."""

    parameters: dict[str, Any] = field(default_factory=dict)
    run_name: str | None = None
    seconds: float = 0.0


@activity.defn(name=ACTIVITY_NAME)
async def raw_noop(input: RawNoopInput) -> dict[str, bool]:
    """Return at once, or stay running `seconds`, heartbeating so that a cancellation
    reaches it (the noop path sends no heartbeat)."""
    deadline = time.monotonic() + input.seconds
    while (remaining := deadline - time.monotonic()) > 0:
        activity.heartbeat()
        await asyncio.sleep(min(remaining, 0.2))
    return {"ok": True}


@workflow.defn(name=WORKFLOW_NAME)
class RawNoop:
    @workflow.run
    async def run(self, input: RawNoopInput) -> dict[str, bool]:
        return await workflow.execute_activity(
            raw_noop,
            input,
            start_to_close_timeout=timedelta(seconds=max(60.0, input.seconds * 2)),
            heartbeat_timeout=timedelta(seconds=1) if input.seconds > 0 else None,
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )


if __name__ == "__main__":
    raise SystemExit("imported by dev.bench; run `python -m dev.bench` instead")
