"""Admission control: `WARMRUN_MAX_PENDING_RUNS` bounds a deployment's open runs.

The count is Temporal's (visibility: open `PipelineRun` workflows on the deployment's
task queue), so every replica sees the same backlog. Counting on every request would
cost an RPC each, so a replica re-counts at most every `REFRESH_SECONDS` (and, at the
limit, every `RECOUNT_SECONDS` before refusing) and adds what the count cannot see
yet: the runs it is starting and the runs it started that visibility does not show
yet (it asks visibility for exactly those ids). A single replica therefore never
admits more than the limit. Consistency window across replicas: a run accepted by
another replica is seen here after at most the recount interval plus one recount plus
the visibility lag (milliseconds on the dev server, about a second on Temporal
Cloud), so a burst can overshoot the limit by what the *other* replicas accept within
that window. The interval is `REFRESH_SECONDS` once this replica's estimate reaches
half the limit and `RELAXED_REFRESH_SECONDS` below that: a recount is two visibility
queries whose cost grows with the namespace (7 ms of server CPU each with 4,000 open
runs on the dev server, measured) and which Temporal Cloud rate-limits, so a replica
far from the limit does not spend them twice a second.

Below the limit, the periodic recount runs in the background: requests are admitted
on the estimate meanwhile. Waiting for it instead stalled every request in flight
twice a second for the length of two visibility queries, which cost a quarter of the
accept throughput at 32 concurrent callers (measured, see BENCHMARKS.md). Only a
request that would be refused, or that finds no count younger than `STALE_SECONDS`,
waits for a fresh count.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from temporalio.client import Client

from warmrun.run import runs_query
from warmrun.services.errors import BacklogFull

REFRESH_SECONDS = 0.5
RELAXED_REFRESH_SECONDS = 5.0
"""The recount interval while the estimate is below half the limit."""
STALE_SECONDS = 30.0
"""A count older than this is not admitted on: the request waits for a new one (and
sees Temporal's error if it cannot be taken)."""
RECOUNT_SECONDS = 0.05
RECOUNTS = 3
"""At the limit, the count is taken again up to this many times, `RECOUNT_SECONDS`
apart, before a run is refused (so a refusal takes ~0.1 s longer)."""
SETTLE_SECONDS = 0.1
"""A run this young is not looked for in visibility yet (it stays counted as unseen)."""
ASSUME_VISIBLE_AFTER = 10.0
"""A started run still unseen after this long is assumed counted (bounds the id list)."""
ID_QUERY_CHUNK = 100
DRAIN_WINDOW = timedelta(seconds=60)
"""Runs that finished this recently tell how fast the backlog drains."""
DRAIN_SAMPLE = 50
"""At most this many of them (the most recently finished) are looked at."""
MIN_RETRY_AFTER = 1
MAX_RETRY_AFTER = 60
"""The bundled client waits at most 120 s in all, so a longer hint would only make
it give up; a backlog that drains slower than this is re-estimated at each retry."""
IDLE_RETRY_AFTER = 5
"""Retry-After when no run finished within the drain window to estimate from."""

logger = logging.getLogger(__name__)


class Admission:
    """A run let in: report its run_id once its workflow exists."""

    def __init__(self, backlog: Backlog) -> None:
        self._backlog = backlog

    def started(self, run_id: str) -> None:
        self._backlog.track(run_id)


class Backlog:
    """The deployment's open runs as this replica estimates them."""

    def __init__(self, client: Client, task_queue: str, limit: int) -> None:
        self._client = client
        self._limit = limit
        self._query = runs_query(task_queue)
        self._counted = 0
        self._counted_at = -math.inf
        self._starting = 0
        self._unseen: dict[str, float] = {}
        self._refreshing = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        self._retry_after: tuple[float, int] | None = None

    @property
    def limit(self) -> int:
        return self._limit

    def track(self, run_id: str) -> None:
        """Count a run this replica started until visibility shows it."""
        self._unseen[run_id] = time.monotonic()

    def ended(self, run_id: str) -> None:
        """A run this replica saw end (a sync call) is no longer open."""
        self._unseen.pop(run_id, None)

    def estimate(self) -> int:
        return self._counted + self._starting + len(self._unseen)

    @asynccontextmanager
    async def admission(self) -> AsyncIterator[Admission]:
        """Let one more run in, or raise `BacklogFull` with an estimated Retry-After."""
        await self._admit()
        self._starting += 1
        try:
            yield Admission(self)
        finally:
            self._starting -= 1

    async def _admit(self) -> None:
        if self._age() > STALE_SECONDS:
            await self._refresh(REFRESH_SECONDS)
        elif self._age() > self._refresh_interval():
            self._refresh_in_background()
        for recount in range(RECOUNTS):
            if not self._full():
                break
            # Runs counted as open may have finished since, and visibility lags a little
            # behind: count again (a few times, briefly) before refusing.
            if recount:
                await asyncio.sleep(RECOUNT_SECONDS)
            if self._age() > RECOUNT_SECONDS:
                await self._refresh(RECOUNT_SECONDS)
        if self._full():
            raise BacklogFull(self._limit, await self._retry_after_seconds())

    def _refresh_interval(self) -> float:
        if self.estimate() * 2 >= self._limit:
            return REFRESH_SECONDS
        return RELAXED_REFRESH_SECONDS

    def _age(self) -> float:
        return time.monotonic() - self._counted_at

    def _full(self) -> bool:
        return self.estimate() >= self._limit

    def _refresh_in_background(self) -> None:
        if self._background is None or self._background.done():
            self._background = asyncio.create_task(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        try:
            await self._refresh(self._refresh_interval())
        except Exception:
            # Requests keep using the last count; past STALE_SECONDS they wait for a
            # recount themselves and answer with its error.
            logger.warning("could not recount the backlog in visibility", exc_info=True)

    async def close(self) -> None:
        """Wait for a recount in flight, so that none outlives the client."""
        if self._background is not None:
            await asyncio.gather(self._background, return_exceptions=True)

    async def _refresh(self, max_age: float) -> None:
        async with self._refreshing:
            if self._age() <= max_age:
                return  # another request refreshed it meanwhile
            checked_at = time.monotonic()
            # Runs started a moment ago are left for the next refresh: they are seldom
            # visible yet, and a partly visible chunk costs a listing (below).
            unseen = [
                run_id
                for run_id, started in self._unseen.items()
                if SETTLE_SECONDS <= checked_at - started < ASSUME_VISIBLE_AFTER
            ]
            # Ask which of our runs visibility shows *before* counting, so a run seen
            # by the first query is surely in the count.
            visible = await self._visible(unseen)
            counted = await self._client.count_workflows(
                f"{self._query} AND ExecutionStatus = 'Running'"
            )
            for run_id, started in list(self._unseen.items()):
                if run_id in visible or checked_at - started >= ASSUME_VISIBLE_AFTER:
                    del self._unseen[run_id]
            self._counted = counted.count
            self._counted_at = time.monotonic()

    async def _visible(self, run_ids: list[str]) -> set[str]:
        """Which of these runs visibility shows. Counting them costs the server a
        quarter of listing them (5-7 vs 21-25 ms of CPU for 50 ids, measured), and
        usually finds them all; only a chunk with some missing is listed."""
        visible: set[str] = set()
        for start in range(0, len(run_ids), ID_QUERY_CHUNK):
            chunk = run_ids[start : start + ID_QUERY_CHUNK]
            ids = ", ".join(f"'{run_id}'" for run_id in chunk)
            query = f"{self._query} AND WorkflowId IN ({ids})"
            if (await self._client.count_workflows(query)).count == len(chunk):
                visible.update(chunk)
                continue
            async for execution in self._client.list_workflows(query):
                visible.add(execution.id)
        return visible

    async def _retry_after_seconds(self) -> int:
        """How long the backlog takes to free a slot for this request, at the rate
        runs finished lately (see `drain_estimate`)."""
        cached = self._retry_after
        if cached and time.monotonic() - cached[0] < REFRESH_SECONDS:
            return cached[1]
        now = datetime.now(UTC)
        since = (now - DRAIN_WINDOW).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        query = f"{self._query} AND ExecutionStatus != 'Running' AND CloseTime > '{since}'"
        started = [
            execution.start_time
            async for execution in self._client.list_workflows(
                query, page_size=DRAIN_SAMPLE, limit=DRAIN_SAMPLE
            )
        ]
        seconds = drain_estimate(started, now, self.estimate() - self._limit + 1)
        self._retry_after = (time.monotonic(), seconds)
        return seconds


def drain_estimate(finished_started: list[datetime], now: datetime, excess: int) -> int:
    """Seconds until `excess` runs have finished, from the runs that finished lately
    (given by their start times): they finished at a rate of their number over the
    time since the earliest of them started, at most `DRAIN_WINDOW`.

    Dividing by the whole window instead undercounted the rate whenever the
    deployment had been idle for part of it (a burst after a quiet minute was told
    180 s while it drained in 20). Measuring from the earliest start covers the runs'
    own duration, so the first few that finish already give a fair rate."""
    if not finished_started:
        return IDLE_RETRY_AFTER
    window = DRAIN_WINDOW.total_seconds()
    span = min(window, (now - min(finished_started)).total_seconds())
    rate = len(finished_started) / max(span, 0.001)
    seconds = math.floor(max(excess, 1) / rate + 0.5)
    return max(MIN_RETRY_AFTER, min(seconds, MAX_RETRY_AFTER))
