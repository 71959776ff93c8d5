"""What a plain-`def` FastAPI dependency costs per request, measured over real HTTP.

    .venv/bin/python dev/dependency_experiment.py [--requests 2000]

FastAPI runs a `def` dependency in its thread pool (two thread hand-offs per request)
and an `async def` one inline on the event loop. warmrun's `get_deployment` is a `def`
and every route depends on it; this serves one app with the same route both ways, on
uvicorn (uvloop, httptools) as `warmrun serve` does, and reports each one's latency so
the proposed one-word change has a measured gain. It also measures the same route with
`response_model` re-validation, to price that too.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Annotated, Any

import httpx
import uvicorn
from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel

from warmrun.devserver import free_port


class Answer(BaseModel):
    run_id: str
    status: str
    progress: dict[str, Any]


def sync_state(request: Request) -> str:
    return request.app.state.name


async def async_state(request: Request) -> str:
    return request.app.state.name


def build_app() -> FastAPI:
    app = FastAPI()
    app.state.name = "bench"

    @app.get("/sync-dependency")
    async def with_sync(name: Annotated[str, Depends(sync_state)]) -> dict[str, str]:
        return {"name": name}

    @app.get("/async-dependency")
    async def with_async(name: Annotated[str, Depends(async_state)]) -> dict[str, str]:
        return {"name": name}

    @app.get("/model", response_model=Answer)
    async def with_model(name: Annotated[str, Depends(async_state)]) -> Answer:
        return Answer(run_id=name, status="succeeded", progress={"step": None})

    return app


async def main(requests: int) -> None:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(build_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(2):  # two rounds: the second shows the spread is not drift
                for path in ("/sync-dependency", "/async-dependency", "/model"):
                    latencies = []
                    for _ in range(requests):
                        began = time.perf_counter()
                        (await http.get(path)).raise_for_status()
                        latencies.append(time.perf_counter() - began)
                    latencies.sort()
                    p50 = latencies[len(latencies) // 2] * 1000
                    p99 = latencies[int(len(latencies) * 0.99)] * 1000
                    print(f"{path:20s} p50 {p50:6.3f} ms  p99 {p99:6.3f} ms")
    finally:
        server.should_exit = True
        await serving


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    asyncio.run(main(parser.parse_args().requests))
