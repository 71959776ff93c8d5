"""What admission control (`WARMRUN_MAX_PENDING_RUNS`) costs the async accept path.

    .venv/bin/python dev/admission_experiment.py [--requests 600]

`bench.py` shows warmrun's accepts at ~0.6x raw `start_workflow` even when nothing
executes. Admission control is the one step of the accept path that waits on something
other than the start itself: every `REFRESH_SECONDS` one request re-counts the backlog
through Temporal visibility (a count, plus a `list_workflows` of the runs it started
that visibility does not show yet) while holding a lock every concurrent accept waits
for. This serves warmrun's real app (API only, as `warmrun serve --no-worker` does) in
this process on uvicorn, once as it is and once with `Backlog.admission` replaced by a
no-op, alternating, each on a fresh deployment, and reports accepts/s and latency at
concurrency 32. The no-op variant is a measurement device, not a proposal.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from bench import BenchServer, percentile
from temporalio.client import Client

from warmrun.api import create_app
from warmrun.api.backpressure import Backlog
from warmrun.devserver import free_port
from warmrun.pipeline import load_pipeline
from warmrun.settings import Settings

DEV = Path(__file__).resolve().parent
REAL_ADMISSION = Backlog.admission


class _Admitted:
    def started(self, run_id: str) -> None:
        """Nothing to remember: this variant never counts."""


@asynccontextmanager
async def no_admission(self: Backlog) -> AsyncIterator[_Admitted]:
    yield _Admitted()


async def accepts(client: Client, deployment: str, requests: int) -> dict[str, Any]:
    app = create_app(
        load_pipeline(f"{DEV / 'noop_pipeline.py'}:noop"),
        Settings(deployment=deployment, run_worker=False, max_pending_runs=1_000_000),
        client=client,
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    latencies: list[float] = []
    try:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60
        ) as http:

            async def lane(count: int, record: bool) -> None:
                for _ in range(count):
                    began = time.perf_counter()
                    answer = await http.post("/invoke", json={"parameters": {}, "async": True})
                    if answer.status_code != 202:
                        raise RuntimeError(f"{answer.status_code}: {answer.text}")
                    if record:
                        latencies.append(time.perf_counter() - began)

            await asyncio.gather(*(lane(2, False) for _ in range(32)))  # warm-up
            began = time.perf_counter()
            await asyncio.gather(*(lane(requests // 32, True) for _ in range(32)))
            seconds = time.perf_counter() - began
    finally:
        server.should_exit = True
        await serving
    latencies.sort()
    return {
        "accepts_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
    }


async def main(requests: int, rounds: int) -> None:
    async with BenchServer(port=free_port(), ui_port=None, log_level="error") as server:
        client = await Client.connect(server.address)
        for index in range(rounds):
            for name, admission in (("admission control", REAL_ADMISSION), ("none", no_admission)):
                Backlog.admission = admission  # type: ignore[method-assign]
                try:
                    result = await accepts(client, f"admission-{index}-{len(name)}", requests)
                finally:
                    Backlog.admission = REAL_ADMISSION  # type: ignore[method-assign]
                print(f"round {index + 1}, {name:17s}: {result}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=2)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.requests, arguments.rounds))
