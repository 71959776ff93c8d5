"""Determinism and compatibility of warmrun's workflows, by replaying histories.

- Committed histories (`tests/histories/`, recorded from released code by
  `python -m dev.record_histories`) replay with today's code: a change to `PipelineRun`
  or `WarmrunWebhookDelivery` that runs already in flight could not follow fails here.
  A deliberately incompatible copy of the workflow shows it does; the same change
  behind `workflow.patched` replays.
- Fresh histories of every kind of run replay in the sandbox: the worker runs
  workflows without it (for speed), so non-deterministic code fails here instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from conftest import submit, wait_for_status
from warmrun.run import WORKFLOW_TYPE, PipelineRunInput, PipelineRunResult
from warmrun.workflows import PipelineRun
from warmrun.workflows.webhook_delivery import WebhookDelivery

HISTORIES = Path(__file__).parent / "histories"
COMMITTED = sorted(HISTORIES.glob("*.json"))
RECORDED_KINDS = {
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
    "resumed_after_lost_worker",
    "with_webhooks",
    "webhook_delivery_started",
    "webhook_delivery_succeeded",
    "started_by_another_client",
    "started_over_nexus",
    "zenml_succeeded",
    "zenml_failed",
}


def committed(path: Path) -> WorkflowHistory:
    """A history as `temporal workflow show -o json` wrote it, under its own workflow ID
    (the workflow derives names from it, such as its webhook deliveries')."""
    text = path.read_text()
    started = json.loads(text)["events"][0]["workflowExecutionStartedEventAttributes"]
    return WorkflowHistory.from_json(started["workflowId"], text)


def test_a_history_of_every_kind_of_run_is_committed() -> None:
    assert {path.stem for path in COMMITTED} >= RECORDED_KINDS


@pytest.mark.parametrize("path", COMMITTED, ids=lambda path: path.stem)
async def test_a_committed_history_replays_with_todays_code(path: Path) -> None:
    replayer = Replayer(workflows=[PipelineRun, WebhookDelivery])  # sandboxed by default
    await replayer.replay_workflow(committed(path))


@workflow.defn(name=WORKFLOW_TYPE)
class PipelineRunWaitingFirst(PipelineRun):
    """An incompatible change: a timer before anything the released code did."""

    @workflow.run
    async def run(self, input: PipelineRunInput) -> PipelineRunResult:
        await workflow.sleep(1)
        return await super().run(input)


@workflow.defn(name=WORKFLOW_TYPE)
class PipelineRunWaitingFirstPatched(PipelineRun):
    """The same change made safely: only runs started by the new code take the timer."""

    @workflow.run
    async def run(self, input: PipelineRunInput) -> PipelineRunResult:
        if workflow.patched("wait-first"):
            await workflow.sleep(1)
        return await super().run(input)


async def test_an_incompatible_change_to_the_workflow_fails_replay() -> None:
    runs = [path for path in COMMITTED if not path.stem.startswith("webhook_delivery")]
    # Unsandboxed: this test module is not importable in the sandbox (it imports the
    # test server); sandboxing is what the tests above check.
    changed = Replayer(
        workflows=[PipelineRunWaitingFirst], workflow_runner=UnsandboxedWorkflowRunner()
    )
    patched = Replayer(
        workflows=[PipelineRunWaitingFirstPatched], workflow_runner=UnsandboxedWorkflowRunner()
    )

    for path in runs:
        failed = await changed.replay_workflow(committed(path), raise_on_replay_failure=False)
        assert isinstance(failed.replay_failure, workflow.NondeterminismError), path.stem
        replayed = await patched.replay_workflow(committed(path), raise_on_replay_failure=False)
        assert replayed.replay_failure is None, (path.stem, replayed.replay_failure)
    assert len(runs) >= 7


async def test_fresh_histories_replay_in_the_sandbox(
    sleepy: httpx.AsyncClient, temporal_client: Client
) -> None:
    succeeded = (await sleepy.post("/invoke", json={"parameters": {"steps": 2}})).headers[
        "X-Run-Id"
    ]
    failed = (await sleepy.post("/invoke", json={"parameters": {"fail": "x"}})).headers["X-Run-Id"]
    timed_out = (
        await sleepy.post("/invoke", json={"parameters": {"seconds": 30}, "timeout": 0.3})
    ).headers["X-Run-Id"]
    cancelled = await submit(sleepy, {"seconds": 30})
    await wait_for_status(sleepy, cancelled, {"running"})
    await sleepy.delete(f"/runs/{cancelled}")
    await wait_for_status(sleepy, cancelled, {"cancelled"})

    replayer = Replayer(workflows=[PipelineRun, WebhookDelivery])  # sandboxed by default
    for run_id in (succeeded, failed, timed_out, cancelled):
        history = await temporal_client.get_workflow_handle(run_id).fetch_history()
        await replayer.replay_workflow(history)
