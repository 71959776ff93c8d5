"""The Temporal-native surface: the `temporal` CLI, composition, listing, live events."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHistory
from temporalio.exceptions import CancelledError
from temporalio.worker import Worker

from conftest import follow_events, submit, wait_for_status
from parent_workflows import OneChild, ParentOfOneRun
from warmrun.devserver import DevServer, temporal_binary

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


async def temporal_cli(dev_server: DevServer, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(temporal_binary()),
        *args,
        "--address",
        dev_server.address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_temporal_cli_describes_a_run_with_its_summary_and_parameters(
    sleepy: httpx.AsyncClient, dev_server: DevServer
) -> None:
    answer = await sleepy.post("/invoke", json={"parameters": {"steps": 3}, "run_name": "nightly"})
    run_id = answer.headers["X-Run-Id"]

    described = json.loads(
        await temporal_cli(dev_server, "workflow", "describe", "-w", run_id, "-o", "json")
    )

    text = json.dumps(described)
    assert "sleepy: nightly" in text  # the static summary
    assert '\\"steps\\": 3' in text  # the parameters, in the static details
    assert described["workflowExecutionInfo"]["taskQueue"] == "warmrun-sleepy"


async def test_temporal_workflow_execute_returns_outputs_and_the_api_reads_the_run(
    sleepy: httpx.AsyncClient, dev_server: DevServer
) -> None:
    run_id = f"from-the-cli-{uuid.uuid4().hex[:8]}"

    output = await temporal_cli(
        dev_server,
        "workflow",
        "execute",
        "--type",
        "PipelineRun",
        "--task-queue",
        "warmrun-sleepy",
        "--workflow-id",
        run_id,
        "--input",
        '{"parameters": {"steps": 2}}',
        "-o",
        "json",
    )

    assert '"steps": 2' in output or '"steps":2' in output
    run = (await sleepy.get(f"/runs/{run_id}")).json()
    assert run["status"] == "succeeded"
    assert run["outputs"]["steps"] == 2
    assert run["outputs"]["run_id"] == run_id
    assert run["pipeline_name"] == "sleepy"  # from the policy its worker gave


async def test_a_run_follows_the_deployment_policy_however_it_was_started(
    sleepy: httpx.AsyncClient, temporal_client: Client
) -> None:
    """The API fixes a run's policy in its input; a run started by another client
    without one asks its worker, through a local activity (a marker in its history)."""
    from_api = await submit(sleepy, {"steps": 1})
    from_client = f"from-a-client-{uuid.uuid4().hex[:8]}"
    await temporal_client.execute_workflow(
        "PipelineRun",
        {"parameters": {"steps": 1}},
        id=from_client,
        task_queue="warmrun-sleepy",
    )
    await wait_for_status(sleepy, from_api, {"succeeded"})

    api_history = await temporal_client.get_workflow_handle(from_api).fetch_history()
    client_history = await temporal_client.get_workflow_handle(from_client).fetch_history()

    api_input = json.loads(
        api_history.events[0].workflow_execution_started_event_attributes.input.payloads[0].data
    )
    assert api_input["policy"]["pipeline_name"] == "sleepy"
    assert api_input["policy"]["heartbeat_timeout"] == 3.0  # the test deployment's setting
    assert local_activities(api_history) == 0
    assert local_activities(client_history) == 1
    for history in (api_history, client_history):
        scheduled = next(
            event.activity_task_scheduled_event_attributes
            for event in history.events
            if event.HasField("activity_task_scheduled_event_attributes")
        )
        assert scheduled.heartbeat_timeout.ToTimedelta().total_seconds() == 3.0


async def test_the_workflow_result_tells_the_times_the_http_api_tells(
    sleepy: httpx.AsyncClient, temporal_client: Client
) -> None:
    """A Temporal or Nexus caller reads the run's times from its result: the same span
    as the HTTP answer's `execution_time` (creation to end), not the pipeline's alone."""
    run_id = f"times-{uuid.uuid4().hex[:8]}"
    result = await temporal_client.execute_workflow(
        "PipelineRun",
        {"parameters": {"seconds": 0.3}},
        id=run_id,
        task_queue="warmrun-sleepy",
        result_type=dict,
    )
    run = (await sleepy.get(f"/runs/{run_id}")).json()

    created, finished = (datetime.fromisoformat(run[key]) for key in ("created_at", "finished_at"))
    ended = datetime.fromisoformat(result["finished_at"])
    assert datetime.fromisoformat(result["started_at"]) == datetime.fromisoformat(run["started_at"])
    # The workflow's clock at its end; Temporal records the close a workflow task later.
    assert ended <= finished < ended + timedelta(seconds=1)
    assert result["execution_time"] == pytest.approx((ended - created).total_seconds(), abs=1e-3)
    assert result["execution_time"] > 0.3


def local_activities(history: WorkflowHistory) -> int:
    return sum(event.HasField("marker_recorded_event_attributes") for event in history.events)


async def test_a_parent_workflow_composes_a_run_and_its_cancel_stops_the_pipeline(
    sleepy: httpx.AsyncClient, temporal_client: Client, tmp_path: Path
) -> None:
    marker = tmp_path / "stopped"
    child_id = f"child-{uuid.uuid4().hex[:8]}"
    async with Worker(temporal_client, task_queue="parents", workflows=[ParentOfOneRun]):
        parent = await temporal_client.start_workflow(
            ParentOfOneRun.run,
            OneChild("sleepy", {"seconds": 60, "marker": str(marker)}, child_id),
            id=f"parent-{child_id}",
            task_queue="parents",
        )
        while (await sleepy.get(f"/runs/{child_id}")).status_code == 404:
            await asyncio.sleep(0.05)  # the parent has not started its child yet
        await wait_for_status(sleepy, child_id, {"running"})

        await parent.cancel()

        child = await wait_for_status(sleepy, child_id, {"cancelled"}, timeout=30)
        assert marker.exists()
        assert child["cancel_requested"] is True
        # The parent closes in its own workflow task, after its child did: wait for it.
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(parent.result(), timeout=30)
        assert isinstance(failure.value.cause, CancelledError)
        assert (await parent.describe()).status == WorkflowExecutionStatus.CANCELED


async def test_the_batch_scoring_example_runs_children_on_the_sentiment_deployment(
    serve, temporal_client: Client
) -> None:
    from batch_scoring import ScoreBatches  # examples/, on sys.path below

    async with (
        serve(f"{EXAMPLES / 'sentiment.py'}:sentiment") as http,
        Worker(temporal_client, task_queue="batch-scoring", workflows=[ScoreBatches]),
    ):
        scores = await temporal_client.execute_workflow(
            ScoreBatches.run,
            [["what a great day"], ["this is awful"]],
            id=f"score-batches-{uuid.uuid4().hex[:8]}",
            task_queue="batch-scoring",
        )
        assert scores[0] > 0 > scores[1]
        listed = (await http.get("/runs", params={"status": "succeeded"})).json()["runs"]
        assert {run["run_name"] for run in listed} >= {"batch 1 of 2", "batch 2 of 2"}


async def test_listing_filters_by_status_and_pages(serve) -> None:
    async with serve("sleepy", deployment="listing") as http:
        succeeded = [(await http.post("/invoke", json={"parameters": {}})).headers["X-Run-Id"]]
        succeeded.append((await http.post("/invoke", json={"parameters": {}})).headers["X-Run-Id"])
        failed = (await http.post("/invoke", json={"parameters": {"fail": "no"}})).headers[
            "X-Run-Id"
        ]
        timed_out = (
            await http.post("/invoke", json={"parameters": {"seconds": 30}, "timeout": 0.5})
        ).headers["X-Run-Id"]
        running = await submit(http, {"seconds": 30})
        await wait_for_status(http, running, {"running"})

        async def listed(**params: Any) -> list[str]:
            ids: list[str] = []
            token = None
            while True:
                page = (
                    await http.get("/runs", params={**params, "limit": 2, "page_token": token})
                ).json()
                assert len(page["runs"]) <= 2
                ids += [run["run_id"] for run in page["runs"]]
                token = page["next_page_token"]
                if not token:
                    return ids

        expected_all = {*succeeded, failed, timed_out, running}
        for _ in range(50):  # visibility settles within moments
            everything = await listed()
            if set(everything) == expected_all:
                break
            await asyncio.sleep(0.1)
        assert sorted(everything) == sorted(expected_all)  # each run once, across pages
        assert everything[0] == running  # open runs first
        assert set(await listed(status="succeeded")) == set(succeeded)
        assert await listed(status="failed") == [failed]
        assert await listed(status="timed_out") == [timed_out]
        assert await listed(status="running") == [running]
        assert await listed(status="queued") == []

        bad = await http.get("/runs", params={"page_token": "not-a-token!"})
        assert bad.status_code == 422
        await http.delete(f"/runs/{running}")


async def test_event_stream_reports_progress_then_the_terminal_event(
    sleepy: httpx.AsyncClient,
) -> None:
    run_id = await submit(sleepy, {"seconds": 2, "steps": 4})

    events = [(name, data) for name, data, _ in await follow_events(sleepy, run_id)]

    names = [name for name, _ in events]
    assert names[0] == "status"
    assert names[-1] == "succeeded"
    assert events[-1][1]["outputs"]["steps"] == 4
    completed = [data["steps_completed"] for name, data in events if name == "progress"]
    assert len(completed) >= 2
    assert completed == sorted(completed)


async def test_event_stream_of_an_unknown_run_is_404(sleepy: httpx.AsyncClient) -> None:
    answer = await sleepy.get("/runs/nope/events")
    assert answer.status_code == 404
    assert answer.json()["code"] == "run_not_found"
