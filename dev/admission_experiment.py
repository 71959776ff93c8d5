"""What admission control (`WARMRUN_MAX_PENDING_RUNS`) costs the async accept path.

    .venv/bin/python dev/admission_experiment.py [--requests 1280] [--rounds 2]

Admission control is the one step of the accept path that waits on something other
than the start itself: every `REFRESH_SECONDS` the backlog is re-counted through
Temporal visibility (a count, plus a count of the runs this replica started that
visibility may not show yet). This serves warmrun's real app (API only, as `warmrun
serve --no-worker` does) in this process on uvicorn and uvloop, and drives it at
concurrency 32 through `bench.py`'s load generator (one aiohttp session per lane), in
three variants, alternating, each on a fresh deployment:

- `background recount`: as shipped: below the limit, requests do not wait for a recount;
- `waiting recount`: `STALE_SECONDS = 0`, so every request past `REFRESH_SECONDS` waits
  for the recount under its lock, as admission did before commit a5f1e59;
- `none`: `Backlog.admission` replaced by a no-op.

The last two are measurement devices, not proposals.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
import uvloop
from bench import BenchServer, Callers, drive, percentile
from temporalio.client import Client

from warmrun.api import backpressure, create_app
from warmrun.api.backpressure import Backlog
from warmrun.devserver import free_port
from warmrun.pipeline import load_pipeline
from warmrun.settings import Settings

DEV = Path(__file__).resolve().parent
REAL_ADMISSION = Backlog.admission
REAL_STALE_SECONDS = backpressure.STALE_SECONDS


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
    try:
        async with Callers(f"http://127.0.0.1:{port}") as http:

            async def invoke(_: int) -> None:
                answer = await http.post("/invoke", json={"parameters": {}, "async": True})
                if answer.status_code != 202:
                    raise RuntimeError(f"{answer.status_code}: {answer.text}")

            await drive(invoke, 64, 32)  # warm-up
            latencies, seconds = await drive(invoke, requests, 32)
    finally:
        server.should_exit = True
        await serving
    latencies.sort()
    return {
        "accepts_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
    }


VARIANTS = ("background recount", "waiting recount", "none")


async def main(requests: int, rounds: int) -> None:
    async with BenchServer(port=free_port(), ui_port=None, log_level="error") as server:
        client = await Client.connect(server.address)
        for index in range(rounds):
            for number, name in enumerate(VARIANTS):
                if name == "waiting recount":
                    backpressure.STALE_SECONDS = 0.0
                if name == "none":
                    Backlog.admission = no_admission  # type: ignore[method-assign]
                try:
                    result = await accepts(client, f"admission-{index}-{number}", requests)
                finally:
                    backpressure.STALE_SECONDS = REAL_STALE_SECONDS
                    Backlog.admission = REAL_ADMISSION  # type: ignore[method-assign]
                print(f"round {index + 1}, {name:18s}: {result}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1280)
    parser.add_argument("--rounds", type=int, default=2)
    arguments = parser.parse_args()
    uvloop.run(main(arguments.requests, arguments.rounds))
