"""Bad input gets a clear 4xx problem with a code, starts nothing, never a 500."""

from __future__ import annotations

import asyncio
import base64
import os
import time

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
        # Control fields are strict: nothing is coerced into a budget or a mode.
        ({"parameters": {}, "timeout": "10"}, ["body", "timeout"]),
        ({"parameters": {}, "timeout": True}, ["body", "timeout"]),
        ({"parameters": {}, "async": "yes"}, ["body", "async"]),
        ({"parameters": {}, "async": 1}, ["body", "async"]),
        ({"parameters": {}, "run_name": 5}, ["body", "run_name"]),
        (
            {"parameters": {}, "skip_artifact_materialization": "true"},
            ["body", "skip_artifact_materialization"],
        ),
        ({"parameters": {}, "callback_url": 7}, ["body", "callback_url"]),
        # A run name reaches operators' terminals: no escape sequences in it.
        ({"parameters": {}, "run_name": "x\u001b[31mRED"}, ["body", "run_name"]),
        ({"parameters": {}, "run_name": "bell\u0007"}, ["body", "run_name"]),
        ({"parameters": {}, "run_name": "csi\u009b31m"}, ["body", "run_name"]),
        ({"parameters": {}, "run_name": "two\nlines"}, ["body", "run_name"]),
    ],
)
async def test_invalid_bodies_are_422_with_field_paths(
    sleepy: httpx.AsyncClient, body: object, location: list[str]
) -> None:
    answer = await sleepy.post("/invoke", json=body)

    problem = assert_problem(answer, 422, "validation_error")
    assert location in [error["loc"] for error in problem["errors"]]


async def test_control_fields_take_their_own_types(sleepy: httpx.AsyncClient) -> None:
    """Strictness refuses coercion, not the types the schema names: an integer is a
    number, and a run name may be any printable text."""
    answer = await sleepy.post(
        "/invoke",
        json={"parameters": {}, "timeout": 10, "async": False, "run_name": "été 😀 ok"},
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["metadata"]["run_name"] == "été 😀 ok"


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


async def test_a_page_token_this_listing_did_not_hand_out_is_422_at_once(
    sleepy: httpx.AsyncClient,
) -> None:
    """Temporal answers a bogus token "unknown" after the SDK retried it for ~10 s: a
    token the client sent is the client's error, refused before Temporal sees it."""
    for _ in range(3):
        assert (await sleepy.post("/invoke", json={"parameters": {}})).status_code == 200
    for _ in range(50):  # visibility shows ended runs within moments
        succeeded = await sleepy.get("/runs", params={"limit": 1, "status": "succeeded"})
        succeeded_token = succeeded.json()["next_page_token"]
        if succeeded_token:
            break
        await asyncio.sleep(0.1)
    token = (await sleepy.get("/runs", params={"limit": 1})).json()["next_page_token"]
    assert token and succeeded_token
    bogus = [
        "AAAA",
        base64.urlsafe_b64encode(b'{"CloseTime": "2020-01-01T00:00:00Z"}').decode(),
        base64.urlsafe_b64encode(os.urandom(48)).decode(),
        "!!!!",
        token[: len(token) // 2],
        token[:-1],
        token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1],
        "v1." + token,
    ]

    for page_token in bogus:
        started = time.monotonic()
        answer = await sleepy.get("/runs", params={"page_token": page_token})
        problem = assert_problem(answer, 422, "invalid_page_token")
        assert problem["errors"][0]["loc"] == ["query", "page_token"]
        assert time.monotonic() - started < 2, page_token
    # A token continues the listing it came from, not one with another status filter.
    other = await sleepy.get("/runs", params={"page_token": token, "status": "failed"})
    assert_problem(other, 422, "invalid_page_token")
    mixed = await sleepy.get("/runs", params={"page_token": succeeded_token})
    assert_problem(mixed, 422, "invalid_page_token")
    # The real tokens work, with another page size too.
    assert (await sleepy.get("/runs", params={"page_token": token, "limit": 5})).status_code == 200
    same = await sleepy.get("/runs", params={"page_token": succeeded_token, "status": "succeeded"})
    assert same.status_code == 200
