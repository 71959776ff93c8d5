"""GET /runs/{id} and DELETE /runs/{id}: status, progress, timing, cancel, timeout."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import httpx
from temporalio.client import Client

from conftest import PIPELINES, TEST_SETTINGS, submit, wait_for_status
from warmrun.deployment import Deployment
from warmrun.metrics import Metrics
from warmrun.pipeline import load_pipeline
from warmrun.run import ENDING_MEMO_KEY, task_queue_for
from warmrun.services.backlog import Backlog
from warmrun.services.read import read_run, run_of
from warmrun.settings import Settings


async def test_progress_is_visible_while_the_run_is_running(sleepy: httpx.AsyncClient) -> None:
    run_id = await submit(sleepy, {"seconds": 3, "steps": 3})

    run = await wait_for_status(
        sleepy,
        run_id,
        {"running"},
        until=lambda run: run["progress"]["steps_completed"] >= 1 and run["progress"]["step"],
    )

    progress = run["progress"]
    assert progress["steps_total"] == 3
    assert progress["step"] in {"step-2", "step-3"}
    assert 0 < progress["fraction"] < 1
    done = await wait_for_status(sleepy, run_id, {"succeeded"})
    assert done["progress"]["steps_completed"] == 3
    assert done["progress"]["fraction"] == 1.0


async def test_timing_fields_are_ordered_and_filled_as_the_run_advances(
    sleepy: httpx.AsyncClient,
) -> None:
    run_id = await submit(sleepy, {"seconds": 0.5})
    running = await wait_for_status(sleepy, run_id, {"running"})
    assert running["finished_at"] is None
    assert running["attempt"] == 1

    done = await wait_for_status(sleepy, run_id, {"succeeded"})
    created, started, finished = (
        datetime.fromisoformat(done[field]) for field in ("created_at", "started_at", "finished_at")
    )
    assert created <= started < finished
    assert (finished - started).total_seconds() >= 0.5


async def test_timeout_ends_the_run_timed_out_and_the_pipeline_stops(
    sleepy: httpx.AsyncClient, tmp_path: Path
) -> None:
    marker = tmp_path / "stopped"
    run_id = await submit(sleepy, {"seconds": 60, "marker": str(marker)}, timeout=1)

    run = await wait_for_status(sleepy, run_id, {"timed_out", "failed", "succeeded"})

    assert run["status"] == "timed_out"
    assert run["error"]["type"] == "RunTimedOut"
    assert marker.exists(), "the pipeline was still running when the run was reported"
    elapsed = datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["created_at"])
    assert elapsed.total_seconds() < 10


async def test_sync_invoke_with_timeout_reports_timed_out(sleepy: httpx.AsyncClient) -> None:
    answer = await sleepy.post("/invoke", json={"parameters": {"seconds": 60}, "timeout": 0.5})

    body = answer.json()
    assert answer.status_code == 200
    assert body["success"] is False
    assert body["metadata"]["status"] == "timed_out"
    assert "RunTimedOut" in body["error"]


async def test_cancel_waits_for_the_pipeline_to_stop(
    sleepy: httpx.AsyncClient, tmp_path: Path
) -> None:
    marker = tmp_path / "stopped"
    # The pipeline looks at cancellation only every 1.5 s: it must be waited for.
    run_id = await submit(sleepy, {"seconds": 60, "marker": str(marker), "check_every": 1.5})
    await wait_for_status(sleepy, run_id, {"running"})

    answer = await sleepy.delete(f"/runs/{run_id}")

    assert answer.status_code == 202
    assert answer.json()["cancel_requested"] is True
    assert answer.json()["status"] == "running"
    while not marker.exists():
        run = (await sleepy.get(f"/runs/{run_id}")).json()
        assert run["status"] != "cancelled", "reported cancelled before the pipeline stopped"
        await asyncio.sleep(0.05)
    run = await wait_for_status(sleepy, run_id, {"cancelled"})
    stopped_at = float(marker.read_text())
    assert datetime.fromisoformat(run["finished_at"]).timestamp() >= stopped_at
    assert run["cancel_requested"] is True
    assert run["error"] is None


async def test_cancel_interrupts_an_async_pipeline_at_its_await(
    async_sleepy: httpx.AsyncClient, tmp_path: Path
) -> None:
    marker = tmp_path / "stopped"
    run_id = await submit(async_sleepy, {"seconds": 60, "marker": str(marker)})
    await wait_for_status(async_sleepy, run_id, {"running"})

    assert (await async_sleepy.delete(f"/runs/{run_id}")).status_code == 202

    await wait_for_status(async_sleepy, run_id, {"cancelled"}, timeout=15)
    assert marker.exists()


async def test_cancel_of_a_finished_run_is_409_with_the_run(sleepy: httpx.AsyncClient) -> None:
    answer = await sleepy.post("/invoke", json={"parameters": {}})
    run_id = answer.headers["X-Run-Id"]

    cancel = await sleepy.delete(f"/runs/{run_id}")

    assert cancel.status_code == 409
    assert cancel.json()["status"] == "succeeded"
    assert cancel.json()["run_id"] == run_id


async def test_unknown_run_is_404_problem(sleepy: httpx.AsyncClient) -> None:
    for method in ("GET", "DELETE"):
        answer = await sleepy.request(method, "/runs/no-such-run")
        assert answer.status_code == 404
        assert answer.headers["Content-Type"] == "application/problem+json"
        assert answer.json()["code"] == "run_not_found"


async def test_other_deployments_and_other_workflows_are_404(
    sleepy: httpx.AsyncClient, async_sleepy: httpx.AsyncClient, temporal_client: Client
) -> None:
    other_run = await submit(async_sleepy, {})
    foreign = await temporal_client.start_workflow(
        "SomeoneElsesWorkflow", id="not-a-pipeline-run", task_queue="warmrun-sleepy"
    )
    try:
        assert (await sleepy.get(f"/runs/{other_run}")).status_code == 404
        assert (await sleepy.delete(f"/runs/{other_run}")).status_code == 404
        assert (await sleepy.get("/runs/not-a-pipeline-run")).status_code == 404
        assert (await async_sleepy.get(f"/runs/{other_run}")).status_code == 200
    finally:
        await foreign.terminate()


async def test_status_is_readable_while_no_worker_runs(serve) -> None:
    async with serve("sleepy", deployment="no-worker-yet", run_worker=False) as http:
        answer = await http.post("/invoke", json={"parameters": {}, "async": True})
        assert answer.status_code == 202
        run = (await http.get(answer.headers["Location"])).json()

        assert run["status"] == "queued"
        assert run["started_at"] is None
        assert run["attempt"] == 0
        assert (await http.get("/ready")).json()["worker"] is None

        cancel = await http.delete(answer.headers["Location"])
        assert cancel.status_code == 202
        assert cancel.json()["cancel_requested"] is True


async def test_warm_init_runs_once_for_many_runs(sleepy: httpx.AsyncClient) -> None:
    answers = await asyncio.gather(
        *(sleepy.post("/invoke", json={"parameters": {"seconds": 0.2}}) for _ in range(6))
    )

    tokens = {answer.json()["outputs"]["warm_token"] for answer in answers}
    assert len(tokens) == 1
    assert len({answer.headers["X-Run-Id"] for answer in answers}) == 6


async def test_retryable_error_resumes_after_the_checkpointed_step(serve, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    async with serve("flaky", deployment="flaky") as http:
        answer = await http.post("/invoke", json={"parameters": {"journal": str(journal)}})

        body = answer.json()
        assert body["success"] is True, body
        assert body["outputs"]["attempt"] == 2
        # The first step ran once (attempt 1); attempt 2 got its result back.
        assert [line.split()[0] for line in journal.read_text().splitlines()] == ["0", "1"]
        assert body["outputs"]["first"]["index"] == 0
        run = (await http.get(f"/runs/{answer.headers['X-Run-Id']}")).json()
        assert run["attempt"] == 2


def _deployment(client: Client, pipeline: str, name: str) -> Deployment:
    settings = Settings(**{**TEST_SETTINGS, "deployment": name})
    return Deployment(
        pipeline=load_pipeline(f"{PIPELINES}:{pipeline}"),
        settings=settings,
        client=client,
        backlog=Backlog(client, task_queue_for(name), settings.max_pending_runs),
        metrics=Metrics(),
    )


async def _from_history(deployment: Deployment, run_id: str) -> dict:
    """The resource as read without the ending the workflow put in its memo."""
    description = await deployment.client.get_workflow_handle(run_id).describe()
    del description.raw_info.memo.fields[ENDING_MEMO_KEY]
    return (await run_of(deployment, description)).model_dump()


async def test_a_closed_run_reads_the_same_from_its_memo_as_from_its_history(
    sleepy: httpx.AsyncClient, temporal_client: Client
) -> None:
    deployment = _deployment(temporal_client, "sleepy", "sleepy")
    succeeded = (await sleepy.post("/invoke", json={"parameters": {"steps": 3}})).headers[
        "X-Run-Id"
    ]
    failed = (await sleepy.post("/invoke", json={"parameters": {"fail": "boom"}})).headers[
        "X-Run-Id"
    ]
    for run_id, status in ((succeeded, "succeeded"), (failed, "failed")):
        description = await temporal_client.get_workflow_handle(run_id).describe()
        ending = (await description.memo())[ENDING_MEMO_KEY]
        assert ending["status"] == status and ending["complete"] is True

        from_memo = (await read_run(deployment, run_id)).model_dump()
        from_history = await _from_history(deployment, run_id)
        # The pipeline's own clock vs the server's start event of its attempt.
        assert abs(from_memo.pop("started_at") - from_history.pop("started_at")).total_seconds() < 1
        assert from_memo == from_history
        assert from_memo["attempt"] == 1 and from_memo["progress"] is not None


async def test_outputs_too_large_for_the_memo_are_read_from_the_close_event(
    serve, temporal_client: Client
) -> None:
    async with serve("big_output", deployment="biggish") as http:
        answer = await http.post("/invoke", json={"parameters": {"size": 5000}})
        run_id = answer.headers["X-Run-Id"]
        assert answer.json()["success"] is True
        run = (await http.get(f"/runs/{run_id}")).json()
        assert run["status"] == "succeeded" and run["outputs"] == {"blob": "x" * 5000}
        assert run["started_at"] is not None and run["attempt"] == 1
    description = await temporal_client.get_workflow_handle(run_id).describe()
    ending = (await description.memo())[ENDING_MEMO_KEY]
    assert ending["complete"] is True and ending["result_in_history"] is True
    assert ending["outputs"] is None

    deployment = _deployment(temporal_client, "big_output", "biggish")
    from_memo = (await read_run(deployment, run_id)).model_dump()
    from_history = await _from_history(deployment, run_id)
    assert abs(from_memo.pop("started_at") - from_history.pop("started_at")).total_seconds() < 1
    assert from_memo == from_history


async def test_an_error_too_long_for_the_memo_is_read_whole_from_the_close_event(
    sleepy: httpx.AsyncClient, temporal_client: Client
) -> None:
    message = "no good " * 300
    answer = await sleepy.post("/invoke", json={"parameters": {"fail": message}})
    run_id = answer.headers["X-Run-Id"]
    description = await temporal_client.get_workflow_handle(run_id).describe()
    ending = (await description.memo())[ENDING_MEMO_KEY]
    assert ending["result_in_history"] is True and ending["error"]["message"] == ""

    run = (await sleepy.get(f"/runs/{run_id}")).json()

    assert run["status"] == "failed"
    assert run["error"] == {"type": "ValueError", "message": message}
    deployment = _deployment(temporal_client, "sleepy", "sleepy")
    from_memo = (await read_run(deployment, run_id)).model_dump()
    from_history = await _from_history(deployment, run_id)
    assert abs(from_memo.pop("started_at") - from_history.pop("started_at")).total_seconds() < 1
    assert from_memo == from_history
