"""Event streams (`GET /runs/{id}/events`) share one poller per run, back off while a
run is idle, and are capped per replica.

Temporal calls are counted by a client interceptor on the app's own client (the SDK's
machinery, nothing replaced): every read of a run starts with one `describe`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from itertools import pairwise
from typing import Any

import httpx
import pytest
from temporalio.client import (
    Client,
    DescribeWorkflowInput,
    Interceptor,
    OutboundInterceptor,
    WorkflowExecutionDescription,
)

from conftest import (
    PIPELINES,
    TEST_SETTINGS,
    ServeFn,
    follow_events,
    steps_shown,
    submit,
    wait_for_status,
)
from test_validation import assert_problem
from warmrun.deployment import Deployment
from warmrun.metrics import Metrics
from warmrun.pipeline import load_pipeline
from warmrun.run import task_queue_for
from warmrun.services.backlog import Backlog
from warmrun.services.read import completed_step_names, read_run, wait_until_closed
from warmrun.services.watch import FIRST_POLL_SECONDS, MAX_POLL_SECONDS, RunFeeds, reported
from warmrun.settings import Settings

"""An event's name, its data and when it arrived (wall clock)."""


@dataclass
class DescribeLog(Interceptor):
    """When each workflow was described, by workflow id."""

    calls: list[tuple[str, float]] = field(default_factory=list)

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _Describes(next, self.calls)

    def of(self, run_id: str, since: float) -> list[float]:
        return [at for described, at in self.calls if described == run_id and at >= since]


class _Describes(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, calls: list[tuple[str, float]]) -> None:
        super().__init__(next)
        self._calls = calls

    async def describe_workflow(self, input: DescribeWorkflowInput) -> WorkflowExecutionDescription:
        self._calls.append((input.id, time.monotonic()))
        return await super().describe_workflow(input)


@pytest.fixture
def described(temporal_client: Client) -> tuple[DescribeLog, Client]:
    log = DescribeLog()
    client = Client(
        temporal_client.service_client, namespace=temporal_client.namespace, interceptors=[log]
    )
    return log, client


@asynccontextmanager
async def _open_stream(http: httpx.AsyncClient, run_id: str) -> AsyncIterator[None]:
    """A stream that has sent its first event, open until the block ends."""
    async with http.stream("GET", f"/runs/{run_id}/events") as stream:
        assert stream.status_code == 200, await stream.aread()
        # Held until the end: an abandoned line iterator, once collected, closes the
        # connection.
        lines = stream.aiter_lines()
        async for line in lines:
            if line.startswith("event:"):
                assert line == "event: status"
                break
        yield
        await lines.aclose()


async def _streams_and_runs(http: httpx.AsyncClient) -> tuple[int, int]:
    """This replica's open event streams and the runs it polls for them (`/metrics`)."""
    values = {}
    for line in (await http.get("/metrics")).text.splitlines():
        name, _, value = line.partition(" ")
        values[name] = value
    return (
        int(float(values["warmrun_event_streams"])),
        int(float(values["warmrun_followed_runs"])),
    )


async def _wait_for_streams_and_runs(
    http: httpx.AsyncClient, expected: tuple[int, int], timeout: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout
    while (now := await _streams_and_runs(http)) != expected:
        assert time.monotonic() < deadline, f"streams and followed runs: {now}, not {expected}"
        await asyncio.sleep(0.05)


def _pollers() -> list[asyncio.Task[Any]]:
    """The feeds' poller tasks alive in this loop (the served app shares it)."""
    return [task for task in asyncio.all_tasks() if task.get_name().startswith("feed ")]


async def test_fifty_streams_of_a_run_share_one_poller_and_all_see_its_end(
    serve: ServeFn, described: tuple[DescribeLog, Client]
) -> None:
    log, client = described
    async with serve("sleepy", deployment="fan-out", client=client) as http:
        run_id = await submit(http, {"seconds": 3, "steps": 3})
        opened = time.monotonic()
        streams = await asyncio.gather(*(follow_events(http, run_id) for _ in range(50)))
        elapsed = time.monotonic() - opened

        for events in streams:
            names = [name for name, _, _ in events]
            assert names[0] == "status"
            assert names[-1] == "succeeded"
            assert events[-1][1]["outputs"]["steps"] == 3
        assert all("progress" in [name for name, _, _ in events] for events in streams)
        # One poller reads at most once per FIRST_POLL_SECONDS (joins within that get
        # its latest snapshot), plus the first read and the one its close wakes. A
        # poller per stream would have read at least 50 times (once per connection).
        reads = log.of(run_id, since=opened)
        assert len(reads) <= elapsed / FIRST_POLL_SECONDS + 3, (len(reads), elapsed)

        # The run ended: its poller is gone, and so are the streams.
        await _wait_for_streams_and_runs(http, (0, 0))
        assert _pollers() == []


async def test_streams_over_the_cap_are_refused_until_one_closes(serve: ServeFn) -> None:
    async with serve("sleepy", deployment="stream-cap", max_event_streams=3) as http:
        run_id = await submit(http, {"seconds": 60})
        async with _open_stream(http, run_id):
            async with _open_stream(http, run_id), _open_stream(http, run_id):
                assert await _streams_and_runs(http) == (3, 1)
                refused = await http.get(f"/runs/{run_id}/events")
                problem = assert_problem(refused, 429, "too_many_streams")
                assert int(refused.headers["Retry-After"]) >= 1
                assert problem["retry_after"] == int(refused.headers["Retry-After"])
                # The limit is this replica's: a plain read still answers.
                assert (await http.get(f"/runs/{run_id}")).status_code == 200

            await _wait_for_streams_and_runs(http, (1, 1))
            async with _open_stream(http, run_id):
                assert await _streams_and_runs(http) == (2, 1)

        # The last stream gone, the run is no longer polled (it still runs).
        await _wait_for_streams_and_runs(http, (0, 0))
        assert _pollers() == []
        assert (await http.get(f"/runs/{run_id}")).json()["status"] in {"queued", "running"}

        spec = (await http.get("/openapi.json")).json()
        assert "429" in spec["paths"]["/runs/{run_id}/events"]["get"]["responses"]
        assert (await http.delete(f"/runs/{run_id}")).status_code == 202


async def test_an_idle_run_is_polled_less_and_less_often_and_its_end_is_seen_at_once(
    serve: ServeFn, described: tuple[DescribeLog, Client]
) -> None:
    log, client = described
    async with serve("sleepy", deployment="back-off", client=client) as http:
        # One step: the run's progress does not change from its start to its end.
        run_id = await submit(http, {"seconds": 9.5, "steps": 1})
        await wait_for_status(
            http, run_id, {"running"}, until=lambda run: run["progress"]["step"] == "step-1"
        )
        opened = time.monotonic()
        events = await follow_events(http, run_id)

    name, run, received = events[-1]
    assert name == "succeeded"
    assert [name for name, _, _ in events[:-1]] == ["status"]
    reads = log.of(run_id, since=opened)
    gaps = [later - earlier for earlier, later in pairwise(reads)]
    assert len(gaps) >= 4, gaps
    for gap, expected in zip(gaps, (0.5, 1.0, 2.0, MAX_POLL_SECONDS), strict=False):
        assert expected * 0.95 <= gap <= expected + 0.75, gaps
    # The run ended between two back-off reads (~7.5 s and ~11.5 s after the stream
    # opened); the long poll on its close event had it read and sent at once.
    finished_at = datetime.fromisoformat(run["finished_at"]).timestamp()
    assert received - finished_at < 1.0, (received - finished_at, gaps)


async def test_a_follower_that_does_not_read_holds_up_no_one_and_gets_the_latest_run(
    sleepy: httpx.AsyncClient, temporal_client: Client
) -> None:
    settings = Settings(**{**TEST_SETTINGS, "deployment": "sleepy"})
    deployment = Deployment(
        pipeline=load_pipeline(f"{PIPELINES}:sleepy"),
        settings=settings,
        client=temporal_client,
        backlog=Backlog(temporal_client, task_queue_for("sleepy"), settings.max_pending_runs),
        metrics=Metrics(),
    )
    feeds = RunFeeds(max_streams=2)
    run_id = await submit(sleepy, {"seconds": 2, "steps": 4})

    def follow() -> Any:
        return feeds.follow(
            run_id,
            read=partial(read_run, deployment, run_id),
            wait_closed=partial(wait_until_closed, temporal_client, run_id),
            read_names=partial(completed_step_names, deployment, run_id),
        )

    reader, idle = follow(), follow()
    assert (feeds.streams, feeds.runs) == (2, 1)
    seen = [await reader.next()]
    while not seen[-1].is_terminal:
        seen.append(await asyncio.wait_for(reader.next(), 10))

    # Only changes are offered: the start, the steps, the end.
    assert len(seen) >= 4, seen
    assert all(reported(earlier) != reported(later) for earlier, later in pairwise(seen))
    # The follower that read nothing holds only the newest snapshot: the end.
    assert await asyncio.wait_for(idle.next(), 1) is seen[-1]
    reader.close()
    idle.close()
    assert (feeds.streams, feeds.runs) == (0, 0)
    await feeds.close()


async def test_steps_shorter_than_a_poll_each_get_their_event(sleepy: httpx.AsyncClient) -> None:
    # 30 steps of 0.1 s: the poller reads every 0.5 s at best, the worker heartbeats
    # every 0.2 s, so most steps begin and end unseen; the stream still names each one
    # from the first it saw.
    run_id = await submit(sleepy, {"seconds": 3, "steps": 30})
    events = await follow_events(sleepy, run_id)

    assert events[-1][0] == "succeeded"
    steps = steps_shown(events)
    assert steps, events
    first = steps[0][0]
    assert steps == [(index, f"step-{index + 1}") for index in range(first, 30)]
    assert first < 15, "the stream began following too late to tell"
