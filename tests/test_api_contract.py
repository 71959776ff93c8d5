"""Backpressure, idempotency keys, auth and limits (SPEC §3, §5)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import statistics
import time
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.service import RPCError

from conftest import submit, wait_for_status
from test_validation import assert_problem
from warmrun.devserver import DevServer
from warmrun.services.backlog import (
    REFRESH_SECONDS,
    RELAXED_REFRESH_SECONDS,
    STALE_SECONDS,
    Backlog,
)


async def count_runs(
    client: Client, task_queue: str, extra: str = "", expect: int | None = None
) -> int:
    """Runs on a task queue per Temporal visibility, which lags a little: when `expect`
    is given, wait up to 5 s for the count to settle on it."""
    query = f"TaskQueue = '{task_queue}' AND WorkflowType = 'PipelineRun'{extra}"
    for _ in range(50):
        count = (await client.count_workflows(query)).count
        if expect is None or count == expect:
            break
        await asyncio.sleep(0.1)
    return count


async def test_backlog_limit_answers_429_with_retry_after_and_starts_nothing(
    serve, temporal_client: Client
) -> None:
    # No worker: runs stay queued, so the backlog only grows.
    async with serve("sleepy", deployment="backlog", run_worker=False, max_pending_runs=5) as http:
        answers = await asyncio.gather(
            *(http.post("/invoke", json={"parameters": {}, "async": True}) for _ in range(20))
        )

        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [202] * 5 + [429] * 15
        refused = next(answer for answer in answers if answer.status_code == 429)
        problem = assert_problem(refused, 429, "backlog_full")
        assert int(refused.headers["Retry-After"]) >= 1
        assert problem["retry_after"] == int(refused.headers["Retry-After"])
        assert await count_runs(temporal_client, "warmrun-backlog", expect=5) == 5


async def test_backlog_tells_its_visible_runs_from_the_ones_visibility_lacks(
    sleepy: httpx.AsyncClient, temporal_client: Client
) -> None:
    """Admission subtracts only the runs visibility shows: counted at once when all
    are there, listed when some are missing."""
    started = [await submit(sleepy, {}) for _ in range(3)]
    await count_runs(
        temporal_client, "warmrun-sleepy", f" AND WorkflowId IN ('{started[-1]}')", expect=1
    )
    backlog = Backlog(temporal_client, "warmrun-sleepy", 1000)
    assert await backlog._visible(started) == set(started)
    assert await backlog._visible([*started, "run_not-started-yet"]) == set(started)


async def test_a_periodic_recount_does_not_hold_up_admission(temporal_client: Client) -> None:
    """Below the limit a request is admitted on the estimate while the recount runs;
    waiting for it stalled every request in flight twice a second."""
    backlog = Backlog(temporal_client, "warmrun-recount", 2)
    async with backlog.admission() as admission:  # no count yet: this one waits for it
        admission.started("run_not-in-visibility")  # 1 of 2: recounts every REFRESH_SECONDS
    first_count = backlog._counted_at
    await asyncio.sleep(REFRESH_SECONDS + 0.1)

    async with backlog.admission():
        assert backlog._counted_at == first_count  # admitted before the recount
        assert backlog._background is not None and not backlog._background.done()

    await backlog.close()
    assert backlog._counted_at > first_count


async def test_far_below_the_limit_the_backlog_is_recounted_less_often(
    temporal_client: Client,
) -> None:
    backlog = Backlog(temporal_client, "warmrun-relaxed", 10)
    async with backlog.admission():
        pass
    backlog._counted_at = time.monotonic() - REFRESH_SECONDS - 0.1
    async with backlog.admission():
        assert backlog._background is None  # 0 of 10 open: the count is fresh enough

    backlog._counted_at = time.monotonic() - RELAXED_REFRESH_SECONDS - 0.1
    async with backlog.admission():
        assert backlog._background is not None
    await backlog.close()
    assert time.monotonic() - backlog._counted_at < 1


async def test_a_failed_recount_is_logged_and_a_stale_count_is_not_admitted_on(
    dev_server: DevServer, caplog: pytest.LogCaptureFixture
) -> None:
    nowhere = await Client.connect(dev_server.address, namespace="no-such-namespace")
    backlog = Backlog(nowhere, "warmrun-nowhere", 10)
    with pytest.raises(RPCError):  # no count at all: the caller sees why
        async with backlog.admission():
            pass

    backlog._counted_at = time.monotonic() - RELAXED_REFRESH_SECONDS - 0.1  # a bit old
    with caplog.at_level(logging.WARNING, logger="warmrun.services.backlog"):
        async with backlog.admission():
            pass
        await backlog.close()
    assert "could not recount the backlog" in caplog.text

    backlog._counted_at = time.monotonic() - STALE_SECONDS - 0.1
    with pytest.raises(RPCError):
        async with backlog.admission():
            pass


async def test_two_replicas_overshoot_at_most_what_the_other_accepts(
    serve, temporal_client: Client
) -> None:
    settings: dict[str, Any] = {"deployment": "backlog-2", "run_worker": False}
    async with (
        serve("sleepy", max_pending_runs=4, **settings) as first,
        serve("sleepy", max_pending_runs=4, **settings) as second,
    ):
        answers = await asyncio.gather(
            *(
                replica.post("/invoke", json={"parameters": {}, "async": True})
                for replica in (first, second) * 10
            )
        )
        accepted = sum(answer.status_code == 202 for answer in answers)
        assert {answer.status_code for answer in answers} == {202, 429}
        # Documented bound: each replica admits at most the limit within one window.
        assert 4 <= accepted <= 8
        assert await count_runs(temporal_client, "warmrun-backlog-2", expect=accepted) == accepted


async def test_retry_after_follows_how_fast_runs_finish(serve) -> None:
    async with serve("sleepy", deployment="drain", max_pending_runs=2) as http:
        for _ in range(30):
            assert (await http.post("/invoke", json={"parameters": {}})).status_code == 200
        await asyncio.sleep(0.6)  # past the count's refresh interval
        await submit(http, {"seconds": 20})
        await submit(http, {"seconds": 20})
        await asyncio.sleep(0.6)  # past the count's refresh interval

        refused = await http.post("/invoke", json={"parameters": {}, "async": True})

        assert refused.status_code == 429
        # 30 runs finished within seconds: a slot frees in well under a second, so the
        # hint is the 1 s floor. Not the idle 5 s (nothing to estimate from), nor the 2 s
        # of a rate taken over the whole minute (30 runs / 60 s), which an idle minute
        # before a burst would stretch far beyond the real drain.
        assert int(refused.headers["Retry-After"]) == 1


async def test_retry_after_is_near_the_measured_time_to_free_a_slot(serve) -> None:
    """A real backlog: 3 pending at most, one run at a time, each taking 2 s, so a slot
    frees every ~2 s. A client retrying every 0.2 s measures how often a slot frees
    (the gaps between its accepted submissions); the 429s' Retry-After must be near
    that, from the first run that finished on (after an idle start, not 15-60 s)."""
    duration, limit = 2.0, 3
    async with serve(
        "sleepy", deployment="drain-measured", max_pending_runs=limit, max_concurrent_runs=1
    ) as http:
        loop = asyncio.get_running_loop()
        began = loop.time()
        accepted: list[float] = []
        hints: list[tuple[float, int]] = []
        while loop.time() - began < 4.5 * duration:
            answer = await http.post(
                "/invoke", json={"parameters": {"seconds": duration}, "async": True}
            )
            now = loop.time() - began
            if answer.status_code == 202:
                accepted.append(now)
            else:
                assert answer.status_code == 429, answer.text
                hints.append((now, int(answer.headers["Retry-After"])))
            await asyncio.sleep(0.2)

        refills = accepted[limit:]  # the first `limit` filled the empty backlog
        assert len(refills) >= 3, accepted
        gaps = [later - earlier for earlier, later in itertools.pairwise(refills)]
        slot_frees_every = statistics.median(gaps)
        assert duration * 0.7 <= slot_frees_every <= duration * 1.5, gaps
        after_first_finish = [hint for at, hint in hints if at > refills[0]]
        assert len(after_first_finish) >= 5, hints
        assert (
            slot_frees_every / 2 <= statistics.median(after_first_finish) <= slot_frees_every * 2
        ), (
            hints,
            gaps,
        )
        assert max(after_first_finish) <= 3 * slot_frees_every, hints


async def test_max_concurrent_runs_keeps_the_rest_queued(serve) -> None:
    async with serve("sleepy", deployment="one-at-a-time", max_concurrent_runs=1) as http:
        runs = {await submit(http, {"seconds": 3}), await submit(http, {"seconds": 3})}
        # A task queue does not promise FIFO order: either run may be the one to start.
        first = await _first_running(http, runs)
        [second] = runs - {first}
        await asyncio.sleep(0.5)

        assert (await http.get(f"/runs/{second}")).json()["status"] == "queued"
        await wait_for_status(http, second, {"running"}, timeout=15)
        # The slot frees when the first pipeline returns; its workflow closes a workflow
        # task later, so for those milliseconds it still reads `running`.
        await wait_for_status(http, first, {"succeeded"}, timeout=5)


async def _first_running(http: httpx.AsyncClient, run_ids: set[str], timeout: float = 15) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        for run_id in run_ids:
            if (await http.get(f"/runs/{run_id}")).json()["status"] == "running":
                return run_id
        await asyncio.sleep(0.05)
    raise AssertionError(f"none of {run_ids} started within {timeout} s")


async def test_concurrent_duplicates_with_one_key_start_one_run(
    sleepy: httpx.AsyncClient, temporal_client: Client
) -> None:
    headers = {"Idempotency-Key": "order-42"}
    answers = await asyncio.gather(
        *(
            sleepy.post(
                "/invoke", json={"parameters": {"seconds": 1}, "async": True}, headers=headers
            )
            for _ in range(10)
        )
    )

    assert {answer.status_code for answer in answers} == {202}
    run_ids = {answer.json()["run_id"] for answer in answers}
    assert len(run_ids) == 1
    [run_id] = run_ids
    await asyncio.sleep(1)  # let visibility catch up with any duplicate
    by_id = f" AND WorkflowId = '{run_id}'"
    assert await count_runs(temporal_client, "warmrun-sleepy", by_id) == 1


async def test_key_reused_after_completion_answers_with_the_same_run(
    sleepy: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "report-2026-11-29"}
    first = await sleepy.post("/invoke", json={"parameters": {"steps": 2}}, headers=headers)
    assert first.status_code == 200
    run_id = first.headers["X-Run-Id"]

    again = await sleepy.post("/invoke", json={"parameters": {"steps": 2}}, headers=headers)
    later_async = await sleepy.post(
        "/invoke", json={"parameters": {"steps": 2}, "async": True}, headers=headers
    )

    assert again.status_code == 200
    assert again.headers["X-Run-Id"] == run_id
    assert again.json()["outputs"] == first.json()["outputs"]
    assert later_async.status_code == 202
    assert later_async.json()["run_id"] == run_id
    # The 202 names the run as it is, not as a new one would be.
    assert later_async.json()["status"] == "succeeded"


async def test_a_key_retried_while_its_run_goes_on_answers_running(
    sleepy: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "still-going"}
    body = {"parameters": {"seconds": 30}, "async": True}
    first = await sleepy.post("/invoke", json=body, headers=headers)
    assert first.status_code == 202 and first.json()["status"] == "queued"
    run_id = first.json()["run_id"]
    await wait_for_status(sleepy, run_id, {"running"})

    again = await sleepy.post("/invoke", json=body, headers=headers)

    assert again.status_code == 202
    assert again.json()["run_id"] == run_id and again.json()["status"] == "running"
    await sleepy.delete(f"/runs/{run_id}")
    await wait_for_status(sleepy, run_id, {"cancelled"})


async def test_same_key_with_another_body_is_422(sleepy: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "same-key-other-body"}
    first = await sleepy.post(
        "/invoke", json={"parameters": {"steps": 1}, "async": True}, headers=headers
    )
    assert first.status_code == 202

    other = await sleepy.post(
        "/invoke", json={"parameters": {"steps": 3}, "async": True}, headers=headers
    )

    problem = assert_problem(other, 422, "idempotency_key_reused")
    assert problem["run_id"] == first.json()["run_id"]


async def test_invalid_idempotency_key_is_422(sleepy: httpx.AsyncClient) -> None:
    answer = await sleepy.post(
        "/invoke", json={"parameters": {}}, headers={"Idempotency-Key": "k" * 300}
    )

    problem = assert_problem(answer, 422, "validation_error")
    assert problem["errors"][0]["loc"] == ["header", "Idempotency-Key"]


async def test_key_names_a_new_run_after_the_retention(serve) -> None:
    async with serve("sleepy", deployment="short-memory", idempotency_retention=1) as http:
        headers = {"Idempotency-Key": "nightly"}
        first = await http.post("/invoke", json={"parameters": {}}, headers=headers)
        await asyncio.sleep(1.5)

        second = await http.post("/invoke", json={"parameters": {}}, headers=headers)

        assert second.status_code == 200
        assert second.json()["success"] is True
        assert second.json()["metadata"]["created_at"] != first.json()["metadata"]["created_at"]


async def test_bearer_tokens_guard_every_route_but_health(serve) -> None:
    async with serve("sleepy", deployment="guarded", auth_token="alpha, beta") as http:
        missing = await http.post("/invoke", json={"parameters": {}})
        assert_problem(missing, 401, "unauthorized")
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = await http.get("/info", headers={"Authorization": "Bearer gamma"})
        assert_problem(wrong, 401, "invalid_token")
        for route in ("/ready", "/info", "/runs/x", "/docs", "/openapi.json"):
            assert (await http.get(route)).status_code == 401, route

        assert (await http.get("/health")).status_code == 200
        authorized = {"Authorization": "Bearer beta"}
        answer = await http.post("/invoke", json={"parameters": {}}, headers=authorized)
        assert answer.status_code == 200
        spec = (await http.get("/openapi.json", headers=authorized)).json()
        assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def test_without_a_token_the_body_is_never_judged(serve) -> None:
    """401 comes from the headers alone: a malformed, oversized or streamed body gets
    no 400 or 413 that would tell an outsider how it was read."""
    async with serve(
        "sleepy", deployment="auth-first", auth_token="alpha", max_body_bytes=200
    ) as http:
        json_type = {"Content-Type": "application/json"}

        async def chunks():
            for _ in range(10):
                yield b"y" * 50

        refused = {
            "malformed": await http.post("/invoke", content=b'{"parameters": {', headers=json_type),
            "oversized": await http.post("/invoke", content=b"x" * 5000, headers=json_type),
            "streamed": await http.post("/submit", content=chunks(), headers=json_type),
            "wrong token": await http.post(
                "/invoke",
                content=b"x" * 5000,
                headers={**json_type, "Authorization": "Bearer beta"},
            ),
            "not a body route": await http.get("/runs/", headers={"Host": "evil.example"}),
        }
        for what, answer in refused.items():
            assert answer.status_code == 401, (what, answer.text)
            assert answer.headers["Content-Type"] == "application/problem+json", what
            assert answer.headers["WWW-Authenticate"].startswith("Bearer"), what
            assert "Location" not in answer.headers, what

        # With the token, the body limit still answers before parsing.
        authorized = {**json_type, "Authorization": "Bearer alpha"}
        too_big = await http.post("/invoke", content=b"x" * 5000, headers=authorized)
        assert_problem(too_big, 413, "payload_too_large")
        malformed = await http.post("/invoke", content=b'{"parameters": {', headers=authorized)
        assert_problem(malformed, 400, "malformed_json")


async def test_body_over_the_limit_is_413_before_parsing(serve) -> None:
    async with serve("sleepy", deployment="small-bodies", max_body_bytes=200) as http:
        big = {"parameters": {}, "run_name": "x" * 250}
        declared = await http.post("/invoke", json=big)
        assert_problem(declared, 413, "payload_too_large")

        async def chunks():
            yield b'{"parameters": {}, "run_name": "'
            for _ in range(10):
                yield b"y" * 50
            yield b'"}'

        streamed = await http.post(
            "/invoke", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert_problem(streamed, 413, "payload_too_large")

        fits = await http.post("/invoke", json={"parameters": {}, "run_name": "ok"})
        assert fits.status_code == 200


async def test_unserialisable_outputs_fail_the_run_clearly(serve) -> None:
    async with serve("unserialisable", deployment="unserialisable") as http:
        answer = await http.post("/invoke", json={"parameters": {}})

        body = answer.json()
        assert body["metadata"]["status"] == "failed"
        run = (await http.get(f"/runs/{answer.headers['X-Run-Id']}")).json()
        assert run["error"]["type"] == "InvalidOutputs"
        assert "not JSON-serialisable" in run["error"]["message"]


async def test_outputs_over_temporals_payload_limit_fail_the_run_clearly(serve) -> None:
    async with serve("big_output", deployment="big-output") as http:
        answer = await http.post("/invoke", json={"parameters": {"size": 3_000_000}})

        body = answer.json()
        assert body["metadata"]["status"] == "failed"
        assert "InvalidOutputs" in body["error"]
        assert "WARMRUN_MAX_OUTPUT_BYTES" in body["error"]
        small = await http.post("/invoke", json={"parameters": {"size": 1000}})
        assert small.json()["success"] is True


async def test_the_server_says_what_its_spec_says(serve) -> None:
    """405 names every method of the path, a long id is not echoed back whole, a
    trailing slash is no redirect to a Location made from the Host header, and the
    spec lists /metrics' 401 and its text answer."""
    async with serve("sleepy", deployment="spec-honest", auth_token="alpha") as http:
        http.headers["Authorization"] = "Bearer alpha"
        for method in ("OPTIONS", "PUT", "PATCH"):
            answer = await http.request(method, "/runs/some-run")
            assert_problem(answer, 405, "method_not_allowed")
            assert answer.headers["Allow"] == "DELETE, GET", method
        assert (await http.request("PUT", "/invoke")).headers["Allow"] == "POST"

        long_id = "a" * 60_000
        for method in ("GET", "DELETE"):
            missing = await http.request(method, f"/runs/{long_id}")
            problem = assert_problem(missing, 404, "run_not_found")
            assert len(missing.content) < 2_000
            assert "60000 characters" in problem["detail"]

        slash = await http.get("/runs/", headers={"Host": "evil.example"})
        assert slash.status_code == 404
        assert "Location" not in slash.headers

        spec = (await http.get("/openapi.json")).json()
        metrics = spec["paths"]["/metrics"]["get"]["responses"]
        assert "401" in metrics
        assert "text/plain" in metrics["200"]["content"]
        scraped = await http.get("/metrics")
        assert scraped.headers["Content-Type"].startswith("text/plain")
