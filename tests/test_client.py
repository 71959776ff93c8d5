"""The Python client (`warmrun.client`) against live deployments on a real dev server.

The deployment serves HTTP from the tests' own event loop, so every call of the
blocking client runs in a thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, TypeVar

import httpx
import pytest

from conftest import ServeFn
from warmrun.client import (
    APIError,
    AsyncDeploymentClient,
    Backpressure,
    DeploymentClient,
    DeploymentUnreachable,
    NotFound,
    Progress,
    Run,
    RunCancelled,
    RunEndedBadly,
    RunFailed,
    RunHandle,
    RunTimedOut,
    Unauthorized,
    Unsupported,
    WaitTimedOut,
    WarmrunError,
)
from warmrun.client._protocol import EventDecoder, ServerSentEvent, apply_event
from warmrun.devserver import free_port

T = TypeVar("T")


@pytest.fixture
def url(sleepy: httpx.AsyncClient) -> str:
    return str(sleepy.base_url)


def with_deployment(url: str, use: Callable[[DeploymentClient], T], **options: Any) -> T:
    with DeploymentClient(url, **options) as deployment:
        return use(deployment)


async def blocking(url: str, use: Callable[[DeploymentClient], T], **options: Any) -> T:
    """Use a sync `DeploymentClient` off the event loop that serves the deployment."""
    return await asyncio.to_thread(with_deployment, url, use, **options)


@dataclass
class Exchange:
    at: float
    method: str
    path: str
    status: int
    retry_after: str | None


def recording_client(log: list[Exchange]) -> httpx.Client:
    """A plain httpx client that notes every answer it gets, for asserting on traffic."""

    def note(response: httpx.Response) -> None:
        request = response.request
        log.append(
            Exchange(
                time.monotonic(),
                request.method,
                request.url.path,
                response.status_code,
                response.headers.get("Retry-After"),
            )
        )

    return httpx.Client(timeout=30, event_hooks={"response": [note]})


# --- invoke -------------------------------------------------------------------------


async def test_invoke_returns_the_outputs_of_the_run(url: str) -> None:
    outputs = await blocking(url, lambda d: d.invoke({"steps": 2}, run_name="client-invoke"))

    assert outputs["steps"] == 2
    assert outputs["run_id"]


async def test_invoke_follows_a_run_that_outlasts_one_long_poll(url: str) -> None:
    log: list[Exchange] = []
    http = recording_client(log)

    outputs = await blocking(
        url, lambda d: d.invoke({"seconds": 1.5}), long_poll=0.3, http_client=http
    )
    http.close()

    assert outputs["steps"] == 1
    [post] = [x for x in log if x.method == "POST"]
    assert post.status == 202, "the long poll should have ended before the run"
    assert any(x.path == f"/runs/{outputs['run_id']}" for x in log)


async def test_a_failed_run_raises_run_failed_carrying_the_run(url: str) -> None:
    with pytest.raises(RunFailed) as caught:
        await blocking(url, lambda d: d.invoke({"fail": "boom"}))

    run = caught.value.run
    assert isinstance(caught.value, RunEndedBadly)
    assert isinstance(caught.value, WarmrunError)
    assert run.status == "failed"
    assert run.error is not None
    assert (run.error.type, run.error.message) == ("ValueError", "boom")
    assert run.run_id in str(caught.value)
    assert "boom" in str(caught.value)


async def test_a_run_over_its_budget_raises_run_timed_out(url: str) -> None:
    with pytest.raises(RunTimedOut) as caught:
        await blocking(url, lambda d: d.invoke({"seconds": 30}, timeout=0.5))

    assert caught.value.run.status == "timed_out"
    assert caught.value.run.error is not None
    assert caught.value.run.error.type == "RunTimedOut"


async def test_bad_parameters_raise_an_api_error_with_the_problem(url: str) -> None:
    with pytest.raises(APIError) as caught:
        await blocking(url, lambda d: d.invoke({"seconds": "soon"}))

    assert caught.value.status_code == 422
    assert caught.value.code == "validation_error"
    assert caught.value.problem["errors"][0]["loc"][-1] == "seconds"


async def test_an_unreachable_deployment_raises_deployment_unreachable() -> None:
    nobody = f"http://127.0.0.1:{free_port()}"

    with pytest.raises(DeploymentUnreachable, match="POST"):
        await blocking(nobody, lambda d: d.invoke({}))


# --- submit, watch, wait ------------------------------------------------------------


async def test_submit_answers_at_once_and_watch_shows_each_step(url: str) -> None:
    def submit_and_watch(deployment: DeploymentClient) -> tuple[RunHandle, float, list[Run]]:
        started = time.monotonic()
        handle = deployment.submit({"seconds": 1.5, "steps": 3}, run_name="watched")
        accepted_after = time.monotonic() - started
        return handle, accepted_after, list(handle.watch(poll=0.1))

    handle, accepted_after, snapshots = await blocking(url, submit_and_watch)

    assert accepted_after < 1.5
    assert handle.accepted is not None
    assert handle.accepted.status == "queued"
    assert handle.accepted.run_id == handle.run_id
    assert [s for s in snapshots if s.is_terminal] == snapshots[-1:]
    final = snapshots[-1]
    assert final.status == "succeeded"
    assert final.run_name == "watched"
    assert final.outputs is not None
    assert final.outputs["steps"] == 3
    steps_seen = {s.progress.step for s in snapshots if s.progress and s.progress.step}
    assert len(steps_seen) >= 2, snapshots
    assert all(a != b for a, b in pairwise(snapshots))


async def test_wait_polls_at_the_servers_retry_after_without_an_event_stream(url: str) -> None:
    log: list[Exchange] = []
    http = recording_client(log)

    def two_waits(deployment: DeploymentClient) -> tuple[Run, Run]:
        first = deployment.submit({"seconds": 3.5}).wait()
        return first, deployment.submit({}).wait()

    first, second = await blocking(url, two_waits, http_client=http)
    http.close()

    assert (first.status, second.status) == ("succeeded", "succeeded")
    streams = [x for x in log if x.path.endswith("/events")]
    if streams[0].status in (404, 405):
        assert len(streams) == 1, "a deployment without an event stream is asked only once"
        polls = [x for x in log if x.method == "GET" and x.path == f"/runs/{first.run_id}"]
        assert polls[0].retry_after == "1"
        gaps = [b.at - a.at for a, b in pairwise(polls)]
        # The server's hint (1 s), not the client's own default (2 s).
        assert all(0.9 <= gap < 1.8 for gap in gaps), gaps
    else:
        assert streams[0].status == 200


async def test_wait_gives_up_after_its_timeout_while_the_run_goes_on(url: str) -> None:
    def wait_briefly(deployment: DeploymentClient) -> tuple[RunHandle, float, WaitTimedOut]:
        handle = deployment.submit({"seconds": 30})
        started = time.monotonic()
        try:
            handle.wait(timeout=0.5)
        except WaitTimedOut as err:
            return handle, time.monotonic() - started, err
        raise AssertionError("wait() returned before the run ended")

    handle, waited, err = await blocking(url, wait_briefly)

    assert isinstance(err, TimeoutError)
    assert err.run_id == handle.run_id
    assert waited < 3
    still = await blocking(url, lambda d: d.run(handle.run_id).status())
    assert still.status in {"queued", "running"}
    await blocking(url, lambda d: d.run(handle.run_id).cancel())


# --- cancel, not found --------------------------------------------------------------


async def test_cancel_asks_and_the_run_ends_cancelled(url: str) -> None:
    def cancel_while_running(deployment: DeploymentClient) -> tuple[Run, RunCancelled]:
        handle = deployment.submit({"seconds": 30})
        for run in handle.watch(poll=0.1):
            if run.status == "running":
                break
        asked = handle.cancel()
        try:
            handle.result(timeout=20)
        except RunCancelled as err:
            return asked, err
        raise AssertionError("a cancelled run gave a result")

    asked, err = await blocking(url, cancel_while_running)

    assert asked.cancel_requested is True
    assert asked.status == "running"
    assert err.run.status == "cancelled"
    assert err.run.run_id == asked.run_id


async def test_cancel_of_an_ended_run_returns_it_as_it_ended(url: str) -> None:
    def cancel_after_the_end(deployment: DeploymentClient) -> Run:
        handle = deployment.submit({})
        handle.wait(poll=0.1)
        return handle.cancel()

    run = await blocking(url, cancel_after_the_end)

    assert run.status == "succeeded"
    assert run.outputs is not None


async def test_an_unknown_run_raises_not_found(url: str) -> None:
    with DeploymentClient(url) as deployment:
        unknown = deployment.run("no-such-run")
        for use in (unknown.status, unknown.cancel, unknown.wait, unknown.result):
            with pytest.raises(NotFound) as caught:
                await asyncio.to_thread(use)
            assert caught.value.status_code == 404
            assert caught.value.code == "run_not_found"


async def test_listing_runs_where_the_server_has_no_such_route_is_a_clear_error(
    url: str,
) -> None:
    not_a_deployment = url.rstrip("/") + "/not-a-deployment"

    with pytest.raises(Unsupported, match=r"GET /not-a-deployment/runs answered 404"):
        await blocking(not_a_deployment, lambda d: next(d.runs()))


# --- the async client ---------------------------------------------------------------


@pytest.fixture
async def async_deployment(url: str) -> AsyncIterator[AsyncDeploymentClient]:
    async with AsyncDeploymentClient(url) as deployment:
        yield deployment


async def test_async_client_invokes_and_raises_the_same_typed_errors(
    async_deployment: AsyncDeploymentClient,
) -> None:
    outputs = await async_deployment.invoke({"steps": 2})
    assert outputs["steps"] == 2

    with pytest.raises(RunFailed) as caught:
        await async_deployment.invoke({"fail": "async boom"})
    assert caught.value.run.error is not None
    assert caught.value.run.error.message == "async boom"

    with pytest.raises(NotFound):
        await async_deployment.run("no-such-run").status()


async def test_async_client_submits_watches_and_cancels(
    async_deployment: AsyncDeploymentClient,
) -> None:
    handle = await async_deployment.submit({"seconds": 0.6, "steps": 2})
    snapshots = [run async for run in handle.watch(poll=0.1)]
    assert snapshots[-1].status == "succeeded"
    assert await handle.result() == snapshots[-1].outputs

    long = await async_deployment.submit({"seconds": 30})
    async for run in long.watch(poll=0.1):
        if run.status == "running":
            break
    assert (await long.cancel()).cancel_requested is True
    with pytest.raises(RunCancelled):
        await long.result(timeout=20)


# --- server-sent events, decoded -----------------------------------------------------


def test_event_decoder_follows_the_event_stream_format() -> None:
    decoder = EventDecoder()
    lines = [
        ": keep-alive",
        "event: progress",
        'data: {"step": "load",',
        'data:  "steps_completed": 1}',
        "id: 7",
        "",
        "",
        "data: plain",
        "retry: 2500",
        "",
    ]

    events = [event for line in lines if (event := decoder.feed(line))]

    assert events == [
        ServerSentEvent("progress", '{"step": "load",\n "steps_completed": 1}', "7"),
        ServerSentEvent("message", "plain", "7"),
    ]
    assert decoder.retry == 2.5


def test_events_update_the_run_they_describe() -> None:
    run = Run(run_id="r", pipeline_name="p", deployment_name="d", status="queued")

    running = apply_event(run, ServerSentEvent("status", '{"status": "running"}'))
    stepped = apply_event(running, ServerSentEvent("progress", '{"step": "a", "fraction": 0.5}'))
    unreadable = apply_event(stepped, ServerSentEvent("progress", "not json"))

    assert running.status == "running"
    assert stepped.progress == Progress(step="a", fraction=0.5)
    assert stepped.status == "running"
    assert unreadable == stepped


# --- need server features that are being built ---------------------------------------


async def test_backpressure_is_retried_after_retry_after_until_the_run_is_accepted(
    serve: ServeFn,
) -> None:
    async with serve("sleepy", deployment="backlog-of-one", max_pending_runs=1) as http:
        url = str(http.base_url)
        first = await blocking(url, lambda d: d.submit({"seconds": 2}))
        log: list[Exchange] = []
        client = recording_client(log)

        outputs = await blocking(url, lambda d: d.invoke({}), http_client=client)
        client.close()

        assert outputs["run_id"] != first.run_id
        refusals = [x for x in log if x.status == 429]
        assert refusals, "the backlog of one should have refused the second run at first"
        assert refusals[0].retry_after is not None
        after = log[log.index(refusals[0]) + 1]
        assert after.at - refusals[0].at >= float(refusals[0].retry_after) * 0.9


async def test_backpressure_past_the_retry_budget_raises_with_retry_after(
    serve: ServeFn,
) -> None:
    async with serve("sleepy", deployment="backlog-full", max_pending_runs=1) as http:
        url = str(http.base_url)
        first = await blocking(url, lambda d: d.submit({"seconds": 30}))
        try:
            with pytest.raises(Backpressure) as caught:
                await blocking(url, lambda d: d.submit({}), max_retries=0)
            assert caught.value.status_code == 429
            assert caught.value.retry_after is not None
            assert caught.value.retry_after > 0
        finally:
            await blocking(url, lambda d: d.run(first.run_id).cancel())


async def test_a_missing_or_wrong_token_raises_unauthorized(serve: ServeFn) -> None:
    async with serve("sleepy", deployment="guarded", auth_token="s3cret") as http:
        url = str(http.base_url)
        for token in (None, "wrong"):
            with pytest.raises(Unauthorized) as caught:
                await blocking(url, lambda d: d.invoke({}), token=token)
            assert caught.value.status_code == 401

        outputs = await blocking(url, lambda d: d.invoke({}), token="s3cret")
        assert outputs["steps"] == 1


async def test_submitting_again_with_the_same_idempotency_key_names_the_same_run(
    url: str,
) -> None:
    def submit_twice(deployment: DeploymentClient) -> tuple[RunHandle, RunHandle, RunHandle]:
        key = f"client-test-{time.time_ns()}"
        first = deployment.submit({"seconds": 0.5}, idempotency_key=key)
        again = deployment.submit({"seconds": 0.5}, idempotency_key=key)
        other = deployment.submit({"seconds": 0.5}, idempotency_key=key + "-other")
        return first, again, other

    first, again, other = await blocking(url, submit_twice)

    assert again.run_id == first.run_id
    assert other.run_id != first.run_id
    key = f"client-test-{time.time_ns()}-body"
    await blocking(url, lambda d: d.submit({"seconds": 0.1}, idempotency_key=key))
    with pytest.raises(APIError) as caught:
        await blocking(url, lambda d: d.submit({"seconds": 0.2}, idempotency_key=key))
    assert caught.value.status_code == 422


async def test_runs_lists_newest_first_across_pages_and_filters_by_status(
    serve: ServeFn,
) -> None:
    async with serve("sleepy", deployment="listed") as http:
        url = str(http.base_url)

        def make_runs(deployment: DeploymentClient) -> list[str]:
            ids = []
            for index in range(3):
                ids.append(deployment.submit({}, run_name=f"listed-{index}").run_id)
                deployment.run(ids[-1]).wait(poll=0.1)
            failed = deployment.submit({"fail": "listed"})
            failed.wait(poll=0.1)
            return [*ids, failed.run_id]

        ids = await blocking(url, make_runs)

        listed = await blocking(url, lambda d: [run.run_id for run in d.runs(page_size=2)])
        assert listed[:4] == ids[::-1]
        failed = await blocking(url, lambda d: [run.run_id for run in d.runs("failed")])
        assert failed == [ids[-1]]


def test_a_503_that_started_nothing_is_retried_even_without_a_key() -> None:
    from warmrun.client._protocol import invoke_call, is_retryable

    call = invoke_call({}, run_name=None, timeout=None, idempotency_key=None, async_=True)
    request = httpx.Request("POST", "http://127.0.0.1/invoke")

    def answer(code: str) -> httpx.Response:
        return httpx.Response(503, json={"code": code}, request=request)

    assert not call.retry_safe
    assert is_retryable(call, answer("too_many_connections"))
    assert is_retryable(call, answer("shutting_down"))
    # Temporal unreachable: the start may have reached it; resending could run twice.
    assert not is_retryable(call, answer("temporal_unavailable"))
