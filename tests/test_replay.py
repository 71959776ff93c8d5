"""Determinism: the worker runs workflows without the sandbox (for speed), so every
kind of recorded run history is replayed here *in* the sandbox, which fails on
non-deterministic code or a change incompatible with running workflows."""

from __future__ import annotations

import httpx
from temporalio.client import Client
from temporalio.worker import Replayer

from conftest import submit, wait_for_status
from warmrun.workflows import PipelineRun
from warmrun.workflows.webhook_delivery import WebhookDelivery


async def test_recorded_histories_replay_in_the_sandbox(
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
