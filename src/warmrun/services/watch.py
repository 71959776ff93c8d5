"""Following runs for event streams: one poller per run, shared by all of its streams.

Temporal pushes no progress (heartbeat) changes, so a run's changes are learnt by
describing it. A poller per stream multiplied that load by the number of streams
(200 idle streams on one run doubled the latency of sync invocations on the same
server), so here the first stream of a run starts its poller, later streams of that
run share it, and the last one to leave stops it; a run's end stops it too.

- **Back-off.** While nothing a stream reports changes (status, `cancel_requested`,
  attempt, progress), the poller waits `FIRST_POLL_SECONDS` doubling up to
  `MAX_POLL_SECONDS`; a change starts it over. Meanwhile it holds one long poll on the
  run's close event, so the end is seen at once whatever the back-off.
- **A fresh first snapshot.** A joining stream gets the poller's latest snapshot if
  it was read less than `FIRST_POLL_SECONDS` ago, else it wakes the poller: a first
  snapshot is never up to `MAX_POLL_SECONDS` old, and streams connecting at any rate
  cost at most one read per `FIRST_POLL_SECONDS` and run.
- **Latest state, not a backlog.** Each stream holds at most one undelivered
  snapshot, the newest: a stream that reads slowly skips intermediate ones and never
  holds up the poller or the other streams (the run resource is the whole state, and
  the end, being last, is never skipped).
- **Every step named.** Steps shorter than the poller's pace (or than the worker's
  heartbeat spacing) fall between two snapshots. A stream that finds steps completed
  that it never announced asks the feed for their names (`step_names`): the feed reads
  them once for all its streams (the checkpoints of the last heartbeat, or the
  pipeline's outcome) and keeps them, since a completed step's name never changes.
- **A cap.** `WARMRUN_MAX_EVENT_STREAMS` bounds the streams open in this replica
  (`TooManyStreams` above it).

How to read a run and wait for its close are given by the caller (the route), so
that this module needs nothing of the deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from warmrun.resource import Run
from warmrun.services.errors import TooManyStreams

FIRST_POLL_SECONDS = 0.5
MAX_POLL_SECONDS = 4.0
STREAMS_RETRY_AFTER = 5
"""Retry-After of a refused stream: streams end as their runs do, so places free up."""

ReadRun = Callable[[], Awaitable[Run]]
WaitClosed = Callable[[], Awaitable[Any]]
ReadStepNames = Callable[[], Awaitable[dict[int, str]]]

logger = logging.getLogger(__name__)


def reported(run: Run) -> tuple[Any, ...]:
    """What of a run an event stream reports; a change in it resets the back-off."""
    return run.status, run.cancel_requested, run.attempt, run.progress


class RunFollower:
    """One stream's place in its run's feed: the snapshots the poller offers it."""

    def __init__(self, feeds: RunFeeds, feed: _Feed) -> None:
        self._feeds = feeds
        self.feed = feed
        self.offered = False
        self._latest: Run | Exception | None = None
        self._ready = asyncio.Event()
        self._closed = False

    def offer(self, snapshot: Run | Exception) -> None:
        self.offered = True
        self._latest = snapshot
        self._ready.set()

    async def next(self) -> Run:
        """The newest snapshot not yet taken (waits for one); raises what the poller
        could not read (`RunNotFound`, Temporal's `RPCError`), after which the feed
        has ended."""
        await self._ready.wait()
        self._ready.clear()
        snapshot, self._latest = self._latest, None
        if isinstance(snapshot, Exception):
            raise snapshot
        assert snapshot is not None
        return snapshot

    async def step_names(self, positions: range) -> dict[int, str]:
        """The names of the completed steps at `positions` that Temporal still holds."""
        return await self.feed.step_names(positions)

    def close(self) -> None:
        """Leave the feed (idempotent); the last follower to leave stops the poller."""
        if not self._closed:
            self._closed = True
            self._feeds._release(self)


class _Feed:
    """The poller of one run and the followers it offers snapshots to."""

    def __init__(
        self, run_id: str, read: ReadRun, wait_closed: WaitClosed, read_names: ReadStepNames
    ) -> None:
        self.run_id = run_id
        self.followers: set[RunFollower] = set()
        self.latest: Run | None = None
        self.read_at = 0.0
        self._wake = asyncio.Event()
        self._read_names = read_names
        self._names: dict[int, str] = {}
        self._reading_names = asyncio.Lock()
        self.task = asyncio.create_task(self._poll(read, wait_closed), name=f"feed {run_id}")

    async def step_names(self, positions: range) -> dict[int, str]:
        if not all(position in self._names for position in positions):
            async with self._reading_names:  # one read for all the streams that ask
                if not all(position in self._names for position in positions):
                    try:
                        self._names.update(await self._read_names())
                    except Exception:
                        # The steps go unnamed; the stream goes on with the next snapshot.
                        logger.warning(
                            "could not read the step names of run %s", self.run_id, exc_info=True
                        )
        return {p: self._names[p] for p in positions if p in self._names}

    def join(self, follower: RunFollower) -> None:
        self.followers.add(follower)
        if self.latest is not None and time.monotonic() - self.read_at < FIRST_POLL_SECONDS:
            follower.offer(self.latest)
        else:
            self._wake.set()

    async def _poll(self, read: ReadRun, wait_closed: WaitClosed) -> None:
        closed: asyncio.Task[None] | None = None
        delay = FIRST_POLL_SECONDS
        try:
            while True:
                read_at = time.monotonic()
                try:
                    run = await read()
                except Exception as err:
                    # Every follower learns it and the feed ends; a stream joining later
                    # starts a new feed (and reads again).
                    for follower in self.followers:
                        follower.offer(err)
                    return
                changed = self.latest is None or reported(run) != reported(self.latest)
                for follower in self.followers:
                    if changed or not follower.offered:
                        follower.offer(run)
                self.latest, self.read_at = run, read_at
                self._wake.clear()
                if run.is_terminal:
                    return
                if closed is None:
                    closed = asyncio.create_task(_until_closed(wait_closed))
                delay = FIRST_POLL_SECONDS if changed else min(delay * 2, MAX_POLL_SECONDS)
                await self._pause(delay, closed)
        finally:
            if closed is not None:
                closed.cancel()

    async def _pause(self, seconds: float, closed: asyncio.Task[None]) -> None:
        """Until the next poll: `seconds`, or less if a follower joins or the run closes."""
        woken = asyncio.create_task(self._wake.wait())
        try:
            await asyncio.wait(
                {woken} if closed.done() else {woken, closed},
                timeout=seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            woken.cancel()


async def _until_closed(wait_closed: WaitClosed) -> None:
    """Return when the run has closed, or when the long poll failed: either way the
    next read tells, and without the long poll the back-off alone paces the poller."""
    try:
        await wait_closed()
    except Exception:
        logger.debug("long poll on a run's close event failed", exc_info=True)


class RunFeeds:
    """The run feeds of this replica's event streams; owned by the `Deployment`."""

    def __init__(self, max_streams: int) -> None:
        self.max_streams = max_streams
        self.streams = 0
        """Followers (open event streams) in this replica."""
        self._feeds: dict[str, _Feed] = {}

    @property
    def runs(self) -> int:
        """Runs with a poller now."""
        return len(self._feeds)

    def follow(
        self, run_id: str, read: ReadRun, wait_closed: WaitClosed, read_names: ReadStepNames
    ) -> RunFollower:
        """A place in the run's feed (started if it has none); `close()` it when the
        stream ends. Raises `TooManyStreams` when this replica has `max_streams`."""
        if self.streams >= self.max_streams:
            raise TooManyStreams(self.max_streams, STREAMS_RETRY_AFTER)
        feed = self._feeds.get(run_id)
        if feed is None or feed.task.done():
            feed = _Feed(run_id, read, wait_closed, read_names)
            feed.task.add_done_callback(lambda _: self._forget(feed))
            self._feeds[run_id] = feed
        follower = RunFollower(self, feed)
        feed.join(follower)
        self.streams += 1
        return follower

    def _release(self, follower: RunFollower) -> None:
        self.streams -= 1
        feed = follower.feed
        feed.followers.discard(follower)
        if not feed.followers:
            self._forget(feed)
            feed.task.cancel()

    def _forget(self, feed: _Feed) -> None:
        if self._feeds.get(feed.run_id) is feed:
            del self._feeds[feed.run_id]

    async def close(self) -> None:
        """Stop every poller (at shutdown, after the server closed its streams)."""
        feeds = list(self._feeds.values())
        self._feeds.clear()
        for feed in feeds:
            feed.task.cancel()
        for feed in feeds:
            with contextlib.suppress(asyncio.CancelledError):
                await feed.task
