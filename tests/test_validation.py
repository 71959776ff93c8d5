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


async def post_raw(http: httpx.AsyncClient, body: bytes, **headers: str) -> httpx.Response:
    """JSON as a careless client writes it: escapes and literals Python's parser takes."""
    return await http.post(
        "/invoke", content=body, headers={"Content-Type": "application/json", **headers}
    )


async def runs_on(client: Client, task_queue: str) -> int:
    return (await client.count_workflows(f"TaskQueue = '{task_queue}'")).count


@pytest.mark.parametrize(
    ("body", "location"),
    [
        (rb'{"parameters": {"fail": "\ud800"}}', ["body", "parameters", "fail"]),
        (rb'{"parameters": {"fail": "ok \udfff"}}', ["body", "parameters", "fail"]),
        (rb'{"parameters": {"\ud800": 1}}', ["body", "parameters", "\\ud800"]),
        (rb'{"parameters": {}, "run_name": "\ud800"}', ["body", "run_name"]),
        (rb'{"parameters": {}, "callback_url": "http://a/\ud800"}', ["body", "callback_url"]),
    ],
)
async def test_a_lone_surrogate_anywhere_is_422_and_starts_nothing(
    sleepy: httpx.AsyncClient, temporal_client: Client, body: bytes, location: list[str]
) -> None:
    before = await runs_on(temporal_client, "warmrun-sleepy")
    for headers in ({}, {"Prefer": "wait=5"}, {"Prefer": "respond-async"}):
        answer = await post_raw(sleepy, body, **headers)

        problem = assert_problem(answer, 422, "validation_error")
        assert location in [error["loc"] for error in problem["errors"]]
    assert await runs_on(temporal_client, "warmrun-sleepy") == before


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"])
async def test_non_finite_numbers_are_422_where_the_type_does_not_allow_them(
    sleepy: httpx.AsyncClient, temporal_client: Client, number: bytes
) -> None:
    before = await runs_on(temporal_client, "warmrun-sleepy")

    answer = await post_raw(sleepy, b'{"parameters": {"seconds": %s}}' % number)
    problem = assert_problem(answer, 422, "validation_error")
    assert problem["errors"][0]["loc"] == ["body", "parameters", "seconds"]
    answer = await post_raw(sleepy, b'{"parameters": {}, "timeout": %s}' % number)
    problem = assert_problem(answer, 422, "validation_error")
    assert ["body", "timeout"] in [error["loc"] for error in problem["errors"]]
    assert await runs_on(temporal_client, "warmrun-sleepy") == before


async def test_a_parameter_that_opts_in_gets_nan_and_infinity_and_reports_the_same(
    serve, temporal_client: Client
) -> None:
    async with serve("measures", deployment="measures") as http:
        answer = await post_raw(
            http, b'{"parameters": {"threshold": NaN, "weights": [Infinity, 1.5, -1e400]}}'
        )

        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert result["outputs"]["threshold"] == "nan"
        assert result["outputs"]["weights"] == ["inf", "1.5", "-inf"]
        # One value, in JSON's words: what the pipeline got is what the run reports.
        used = result["metadata"]["parameters_used"]
        assert used["threshold"] == "NaN"
        assert used["weights"] == ["Infinity", 1.5, "-Infinity"]
        run = (await http.get(f"/runs/{result['metadata']['run_id']}")).json()
        assert run["outputs"] == result["outputs"]

        before = await runs_on(temporal_client, "warmrun-measures")
        refused = {
            b'{"parameters": {"scale": NaN}}': ["body", "parameters", "scale"],
            b'{"parameters": {"tags": {"a": [1, Infinity]}}}': [
                "body",
                "parameters",
                "tags",
                "a",
                1,
            ],
            rb'{"parameters": {"tags": {"deep": {"x": "\ud83d"}}}}': [
                "body",
                "parameters",
                "tags",
                "deep",
                "x",
            ],
        }
        for body, location in refused.items():
            problem = assert_problem(await post_raw(http, body), 422, "validation_error")
            assert location in [error["loc"] for error in problem["errors"]], body
        # A strict float allows NaN but could not read it back from the run's JSON input.
        strict = await post_raw(http, b'{"parameters": {"exact": NaN}}')
        problem = assert_problem(strict, 422, "validation_error")
        assert problem["errors"][0]["type"] == "non_finite_unsupported"
        assert await runs_on(temporal_client, "warmrun-measures") == before
        # A surrogate pair is one character, not a lone surrogate.
        paired = await post_raw(http, rb'{"parameters": {"tags": {"smile": "\ud83d\ude00"}}}')
        assert paired.status_code == 200, paired.text
        assert paired.json()["outputs"]["tags"] == {"smile": "\U0001f600"}
