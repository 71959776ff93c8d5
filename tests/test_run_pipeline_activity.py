"""`run_pipeline` never leaves a pipeline running behind it, whatever goes wrong.

These run the activity in the SDK's `ActivityEnvironment` (activity context, cancel)
because the failure they guard against needs the start-event handover to hang or
fail at a chosen moment; the real worker runs the same method in every other test.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from conftest import PIPELINES, TEST_SETTINGS
from warmrun.activities import run_pipeline as run_pipeline_module
from warmrun.activities.run_pipeline import PipelineActivities
from warmrun.pipeline import load_pipeline
from warmrun.run import Progress, RunPipelineInput
from warmrun.settings import Settings


def _activities() -> PipelineActivities:
    return PipelineActivities(load_pipeline(f"{PIPELINES}:sleepy"), Settings(**TEST_SETTINGS))


async def test_a_cancel_while_the_start_is_reported_stops_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reporting = asyncio.Event()

    async def hangs(self: object, progress: Progress) -> None:
        reporting.set()
        await asyncio.sleep(3600)

    monkeypatch.setattr(run_pipeline_module.RunEventSender, "started", hangs)
    marker = tmp_path / "stopped"
    env = ActivityEnvironment()
    parameters = {"seconds": 60, "marker": str(marker)}
    running = asyncio.ensure_future(
        env.run(_activities().run_pipeline, RunPipelineInput(parameters=parameters))
    )
    await asyncio.wait_for(reporting.wait(), 10)

    env.cancel()

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 10)
    # The activity returned only after the pipeline's code had stopped.
    assert marker.exists()


async def test_a_failing_start_report_stops_the_pipeline_before_the_attempt_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fails(self: object, progress: Progress) -> None:
        raise RuntimeError("no way to report")

    monkeypatch.setattr(run_pipeline_module.RunEventSender, "started", fails)
    marker = tmp_path / "stopped"
    env = ActivityEnvironment()
    parameters = {"seconds": 60, "marker": str(marker)}

    with pytest.raises(Exception, match="no way to report"):
        await asyncio.wait_for(
            env.run(_activities().run_pipeline, RunPipelineInput(parameters=parameters)), 10
        )
    assert marker.exists()


async def test_a_pipeline_that_raises_while_stopping_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "stopped"
    env = ActivityEnvironment()
    parameters = {"seconds": 60, "marker": str(marker), "fail_on_stop": "disk full"}
    running = asyncio.ensure_future(
        env.run(_activities().run_pipeline, RunPipelineInput(parameters=parameters))
    )
    await asyncio.sleep(0.3)

    with caplog.at_level(logging.WARNING, logger="warmrun.activities.run_pipeline"):
        env.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(running, 10)

    assert marker.exists()
    assert "raised while stopping" in caplog.text and "disk full" in caplog.text
