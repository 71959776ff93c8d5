"""The HTTP load generator: concurrent lanes, each its own caller.

`drive` runs an operation n times over a number of lanes and times each call; `Callers`
gives every lane its own aiohttp session, so warmrun sees independent clients. The raw
side's operations go through `drive` too, so both sides are timed the same way.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

LANE: contextvars.ContextVar[int] = contextvars.ContextVar("lane", default=0)
"""Which concurrent lane of `drive` the current task is (each lane is its own task)."""
MAX_LANES = 32


@dataclass
class Answer:
    status_code: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


class Callers:
    """One HTTP session, so one connection, per concurrent lane: independent callers,
    as a deployment sees them.

    The load generator shares the 2 cores with the dev server and warmrun, so what it
    spends per request is taken from the system under test. aiohttp spends 0.16-0.37 ms
    of CPU per request where httpx spends 0.7-1.2 ms (`dev/experiments/http_client.py`), and
    one httpx client shared by 32 lanes tripled that again (httpcore re-checks every
    pooled connection on every request).
    """

    def __init__(self, base_url: str, lanes: int = MAX_LANES) -> None:
        self._base_url = base_url
        self._lanes = lanes
        self._sessions: list[aiohttp.ClientSession] = []

    async def request(self, method: str, path: str, body: Any = None) -> Answer:
        session = self._sessions[LANE.get() % len(self._sessions)]
        async with session.request(method, path, json=body) as answer:
            return Answer(answer.status, await answer.text())

    async def get(self, path: str) -> Answer:
        return await self.request("GET", path)

    async def post(self, path: str, json: Any) -> Answer:
        return await self.request("POST", path, json)

    async def delete(self, path: str) -> Answer:
        return await self.request("DELETE", path)

    async def __aenter__(self) -> Callers:
        timeout = aiohttp.ClientTimeout(total=60.0)
        self._sessions = [
            aiohttp.ClientSession(self._base_url, timeout=timeout) for _ in range(self._lanes)
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.gather(*(session.close() for session in self._sessions))


async def drive(
    operation: Callable[[int], Awaitable[None]], n: int, concurrency: int
) -> tuple[list[float], float]:
    """Run `operation(i)` for i < n with `concurrency` lanes; latencies and wall time."""
    indices = iter(range(n))
    latencies: list[float] = []

    async def lane(number: int) -> None:
        LANE.set(number)
        for index in indices:  # shared iterator: every index runs exactly once
            began = time.perf_counter()
            await operation(index)
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(lane(number) for number in range(min(concurrency, n))))
    return latencies, time.perf_counter() - began
