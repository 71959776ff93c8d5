"""Status: concluded in run 6 (BENCHMARKS.md "Runs 6-8"); kept to re-measure the load generator.

What the HTTP load generator itself costs per request, by client library.

    .venv/bin/python -m dev.experiments.http_client [--requests 4000] [--loop asyncio]

The benchmark's load generator shares the machine's 2 cores with the dev server and
warmrun, so every millisecond of CPU it spends per request is taken from the system
under test and counted against warmrun. This serves one trivial FastAPI route in a
subprocess (uvicorn with uvloop and httptools, as `warmrun serve` runs) and drives it
from this process through the bench's lanes (`dev.bench.load.drive`) with httpx (one
client per lane, as the bench did before run 6) and aiohttp (one session per lane, as
it does now), at concurrency 1 and 32, reporting this process's CPU per request and
the latency each client measures. Run 6 found aiohttp at 0.16-0.37 ms of CPU per
request against httpx's 0.7-1.2 ms, and the bench switched to it: re-run this when
aiohttp, httpx or the bench's lanes change.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx
import uvloop

from dev.bench.load import LANE, drive
from dev.bench.stats import percentile
from warmrun.devserver import free_port

APP = """
from fastapi import FastAPI

app = FastAPI()


@app.post("/invoke", status_code=202)
async def invoke(body: dict) -> dict:
    return {"run_id": "run_x", "status": "queued", "location": "/runs/run_x"}
"""


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


async def measured(call: Callable[[], Awaitable[None]], n: int, lanes: int) -> dict[str, Any]:
    """The bench's lanes, with this process's CPU per request."""
    cpu = cpu_seconds()
    latencies, seconds = await drive(lambda _: call(), n, lanes)
    cpu = cpu_seconds() - cpu
    return {
        "per_s": round(n / seconds),
        "p50_ms": round(percentile(sorted(latencies), 0.5) * 1000, 3),
        "client_cpu_ms_per_request": round(cpu * 1000 / n, 3),
    }


async def measure(base_url: str, n: int) -> None:
    for lanes in (1, 32):
        await compare(base_url, n, lanes)


async def compare(base_url: str, n: int, lanes: int) -> None:
    body = {"parameters": {}, "async": True}
    httpx_clients = [httpx.AsyncClient(base_url=base_url) for _ in range(lanes)]
    sessions = [aiohttp.ClientSession(base_url) for _ in range(lanes)]

    async def with_httpx() -> None:
        answer = await httpx_clients[LANE.get()].post("/invoke", json=body)
        answer.json()

    async def with_aiohttp() -> None:
        async with sessions[LANE.get()].post("/invoke", json=body) as answer:
            await answer.json()

    for name, call in (("httpx", with_httpx), ("aiohttp", with_aiohttp)):
        await measured(call, min(n, 200), lanes)  # warm up connections
        print(f"c={lanes:<3} {name:<8}", await measured(call, n, lanes), flush=True)
    for client in httpx_clients:
        await client.aclose()
    for session in sessions:
        await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dev.experiments.http_client", description=__doc__.split("\n\n")[1]
    )
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            APP + f"\nimport uvicorn\nuvicorn.run(app, port={port}, "
            "loop='uvloop', http='httptools', log_level='warning', access_log=False)",
        ],
    )
    try:
        time.sleep(3)
        runner = uvloop.run if args.loop == "uvloop" else asyncio.run
        runner(measure(f"http://127.0.0.1:{port}", args.requests))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
