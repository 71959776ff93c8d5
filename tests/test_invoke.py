"""POST /invoke and /submit: sync, async (body and Prefer), Prefer: wait."""

from __future__ import annotations

from datetime import datetime

import httpx

from conftest import wait_for_status


async def test_sync_invoke_answers_zenml_shaped_result_with_run_id_header(
    sleepy: httpx.AsyncClient,
) -> None:
    answer = await sleepy.post("/invoke", json={"parameters": {"steps": 2}, "run_name": "nightly"})

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["success"] is True
    assert body["error"] is None
    run_id = answer.headers["X-Run-Id"]
    assert body["outputs"]["run_id"] == run_id
    assert body["outputs"]["steps"] == 2
    assert body["execution_time"] > 0
    metadata = body["metadata"]
    assert metadata["run_id"] == run_id
    assert metadata["run_name"] == "nightly"
    assert metadata["pipeline_name"] == "sleepy"
    assert metadata["deployment_name"] == "sleepy"
    assert metadata["status"] == "succeeded"
    assert metadata["parameters_used"]["steps"] == 2
    assert metadata["parameters_used"]["seconds"] == 0.0  # defaults are shown too

    run = (await sleepy.get(f"/runs/{run_id}")).json()
    assert run["status"] == "succeeded"
    assert run["run_name"] == "nightly"
    assert run["outputs"] == body["outputs"]


async def test_async_in_body_answers_202_and_the_run_is_readable_at_once(
    sleepy: httpx.AsyncClient,
) -> None:
    answer = await sleepy.post("/invoke", json={"parameters": {"seconds": 1}, "async": True})

    assert answer.status_code == 202, answer.text
    body = answer.json()
    run_id = body["run_id"]
    assert body["status"] == "queued"
    assert answer.headers["Location"] == f"/runs/{run_id}" == body["location"]
    datetime.fromisoformat(body["created_at"])

    read = await sleepy.get(answer.headers["Location"])
    assert read.status_code == 200
    assert read.json()["status"] in {"queued", "running"}
    assert "Retry-After" in read.headers

    done = await wait_for_status(sleepy, run_id, {"succeeded"})
    assert done["outputs"]["run_id"] == run_id


async def test_prefer_respond_async_answers_202(sleepy: httpx.AsyncClient) -> None:
    answer = await sleepy.post(
        "/invoke", json={"parameters": {}}, headers={"Prefer": "respond-async"}
    )

    assert answer.status_code == 202
    assert answer.headers["Preference-Applied"] == "respond-async"
    assert (await sleepy.get(answer.headers["Location"])).status_code == 200


async def test_prefer_wait_returns_the_result_when_the_run_ends_in_time(
    sleepy: httpx.AsyncClient,
) -> None:
    answer = await sleepy.post(
        "/invoke",
        json={"parameters": {"seconds": 0.2}},
        headers={"Prefer": "respond-async, wait=20"},
    )

    assert answer.status_code == 200
    assert answer.json()["success"] is True
    assert answer.headers["Preference-Applied"] == "respond-async, wait=20"


async def test_prefer_wait_bounds_a_sync_call_and_falls_back_to_202(
    sleepy: httpx.AsyncClient,
) -> None:
    answer = await sleepy.post(
        "/invoke", json={"parameters": {"seconds": 5}}, headers={"Prefer": "wait=0.5"}
    )

    assert answer.status_code == 202
    assert answer.headers["Preference-Applied"] == "wait=0.5"
    run = (await sleepy.get(answer.headers["Location"])).json()
    assert run["status"] in {"queued", "running"}
    await sleepy.delete(answer.headers["Location"])


async def test_submit_is_the_zenml_async_alias(sleepy: httpx.AsyncClient) -> None:
    answer = await sleepy.post("/submit", json={"parameters": {}})

    assert answer.status_code == 202
    run_id = answer.json()["run_id"]
    assert answer.headers["Location"] == f"/runs/{run_id}"
    await wait_for_status(sleepy, run_id, {"succeeded"})


async def test_failing_pipeline_answers_200_with_success_false_and_its_message(
    sleepy: httpx.AsyncClient,
) -> None:
    answer = await sleepy.post("/invoke", json={"parameters": {"fail": "the data is bad"}})

    assert answer.status_code == 200
    body = answer.json()
    assert body["success"] is False
    assert body["outputs"] is None
    assert body["metadata"]["status"] == "failed"
    assert "the data is bad" in body["error"]

    run = (await sleepy.get(f"/runs/{answer.headers['X-Run-Id']}")).json()
    assert run["status"] == "failed"
    assert run["error"] == {"type": "ValueError", "message": "the data is bad"}
    assert run["attempt"] == 1  # a pipeline exception is not retried


async def test_bare_return_value_is_wrapped_under_result(serve) -> None:
    async with serve("returns_a_number", deployment="returns-a-number") as http:
        answer = await http.post("/invoke", json={"parameters": {"scale": 3}})

        assert answer.json()["outputs"] == {"result": 63}
        info = (await http.get("/info")).json()
        assert info["outputs_schema"]["properties"]["result"]["type"] == "integer"


async def test_a_sync_caller_that_hangs_up_leaves_the_run_running(
    sleepy: httpx.AsyncClient,
) -> None:
    async with sleepy.stream("POST", "/invoke", json={"parameters": {"seconds": 1.5}}) as answer:
        assert answer.status_code == 200
        run_id = answer.headers["X-Run-Id"]  # known before the run ends
    # The connection is closed here, long before the run's end.

    run = await wait_for_status(sleepy, run_id, {"succeeded", "failed", "cancelled"})
    assert run["status"] == "succeeded"


async def test_the_sync_answer_and_the_run_resource_tell_the_same_times(
    sleepy: httpx.AsyncClient,
) -> None:
    for parameters in ({"seconds": 0.2}, {"fail": "boom"}):
        answer = await sleepy.post("/invoke", json={"parameters": parameters})
        metadata = answer.json()["metadata"]
        run = (await sleepy.get(f"/runs/{metadata['run_id']}")).json()

        # Both are Temporal's: the workflow's start and close, not the API's clock.
        assert metadata["created_at"] == run["created_at"]
        assert metadata["finished_at"] == run["finished_at"]
        elapsed = datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(
            run["created_at"]
        )
        assert answer.json()["execution_time"] == elapsed.total_seconds()
