"""Bad input gets a clear 4xx problem with a code, starts nothing, never a 500."""

from __future__ import annotations

import httpx
import pytest
from temporalio.client import Client


def assert_problem(answer: httpx.Response, status: int, code: str) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"] == "application/problem+json"
    body = answer.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["detail"]
    return body


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"parameters": {"seconds": "soon"}}, ["body", "parameters", "seconds"]),
        ({"parameters": {"secnds": 1}}, ["body", "parameters", "secnds"]),
        ({"parameters": {}, "asynch": True}, ["body", "asynch"]),
        ({"parameters": [1, 2]}, ["body", "parameters"]),
        ({"parameters": {}, "timeout": 0}, ["body", "timeout"]),
        ({"parameters": {}, "timeout": -3}, ["body", "timeout"]),
        ({"parameters": {}, "timeout": 10**9}, ["body", "timeout"]),
        ({"parameters": {}, "async": "maybe"}, ["body", "async"]),
        ([], ["body"]),
    ],
)
async def test_invalid_bodies_are_422_with_field_paths(
    sleepy: httpx.AsyncClient, body: object, location: list[str]
) -> None:
    answer = await sleepy.post("/invoke", json=body)

    problem = assert_problem(answer, 422, "validation_error")
    assert location in [error["loc"] for error in problem["errors"]]


async def test_malformed_json_is_400(sleepy: httpx.AsyncClient) -> None:
    answer = await sleepy.post(
        "/invoke", content=b'{"parameters": {', headers={"Content-Type": "application/json"}
    )

    assert_problem(answer, 400, "malformed_json")


async def test_rejected_requests_start_no_run(
    sleepy: httpx.AsyncClient, temporal_client: Client
) -> None:
    before = await temporal_client.count_workflows("TaskQueue = 'warmrun-sleepy'")
    await sleepy.post("/invoke", json={"parameters": {"secnds": 1}})
    await sleepy.post("/invoke", json={"parameters": {}, "asynch": True})

    after = await temporal_client.count_workflows("TaskQueue = 'warmrun-sleepy'")
    assert after.count == before.count


async def test_unknown_route_and_method_are_problems(sleepy: httpx.AsyncClient) -> None:
    assert_problem(await sleepy.get("/nope"), 404, "not_found")
    assert_problem(await sleepy.get("/invoke"), 405, "method_not_allowed")
