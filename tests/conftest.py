"""One real Temporal dev server for the whole session; deployments served for real.

Each deployment is a real uvicorn server on a loopback port running the real app
(API + Temporal worker in one event loop), exactly as `warmrun serve` does.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from temporalio.client import Client

from warmrun.api import create_app
from warmrun.devserver import DevServer, free_port
from warmrun.pipeline import load_pipeline
from warmrun.settings import Settings

PIPELINES = Path(__file__).parent / "pipelines.py"
sys.path.append(str(Path(__file__).resolve().parents[1] / "examples"))

# A throwaway ZenML store and repository for the session, set before anything imports
# zenml (it reads these once) and inherited by the processes tests start: nothing is
# written under ~/.config, and the real ZenML runs against a SQLite file in a temp dir.
ZENML_HOME = Path(tempfile.mkdtemp(prefix="warmrun-tests-zenml-"))
ZENML_REPO = ZENML_HOME / "repo"
atexit.register(shutil.rmtree, ZENML_HOME, ignore_errors=True)
os.environ.update(
    {
        "ZENML_CONFIG_PATH": str(ZENML_HOME / "config"),
        "ZENML_LOCAL_STORES_PATH": str(ZENML_HOME / "stores"),
        "ZENML_REPOSITORY_PATH": str(ZENML_REPO),
        "ZENML_ANALYTICS_OPT_IN": "false",
        "ZENML_ENABLE_RICH_TRACEBACK": "false",
        "ZENML_LOGGING_COLORS_DISABLED": "true",
        "AUTO_OPEN_DASHBOARD": "false",
    }
)

# Short timeouts keep failure-detection tests fast.
TEST_SETTINGS: dict[str, Any] = {
    "heartbeat_timeout": 3.0,
    "cancel_grace": 10.0,
    "shutdown_grace": 0.0,
    "progress_interval": 0.2,
}


@pytest.fixture(scope="session")
async def dev_server() -> AsyncIterator[DevServer]:
    # In memory: fast; the reliability suite has a server of its own on a SQLite file.
    # The HTTP port is fixed so tests can call Nexus endpoints over HTTP.
    server = DevServer(port=free_port(), ui_port=None, http_port=free_port(), log_level="error")
    async with server:
        os.environ["TEMPORAL_ADDRESS"] = server.address
        yield server


@pytest.fixture(scope="session")
async def temporal_client(dev_server: DevServer) -> Client:
    return await Client.connect(dev_server.address)


ServeFn = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture(scope="session")
def serve(temporal_client: Client) -> ServeFn:
    """`async with serve("sleepy", deployment=...) as http:` a live deployment. Replicas
    share the session's client unless given their own (as processes have: eager start
    hands a run's first task to a worker of the starting client)."""

    @asynccontextmanager
    async def serving(
        pipeline: str, *, client: Client | None = None, **settings: Any
    ) -> AsyncIterator[httpx.AsyncClient]:
        reference = pipeline if ":" in pipeline else f"{PIPELINES}:{pipeline}"
        app = create_app(
            load_pipeline(reference),
            Settings(**{**TEST_SETTINGS, **settings}),
            client=client or temporal_client,
        )
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        serving_task = asyncio.create_task(server.serve())
        while not server.started:
            if serving_task.done():
                serving_task.result()
            await asyncio.sleep(0.02)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                yield http
        finally:
            server.should_exit = True
            await serving_task

    return serving


@pytest.fixture(scope="session")
def zenml_repo() -> Path:
    """`zenml init` in the session's ZenML repository, holding the tests' ZenML
    pipelines: ZenML resolves pipeline code relative to the repository (its source
    root), in this process and in the servers ZenML's deployer starts."""
    from zenml.client import Client

    if not (ZENML_REPO / ".zen").exists():
        shutil.copytree(Path(__file__).parent / "zenml_repo", ZENML_REPO, dirs_exist_ok=True)
        Client.initialize(root=ZENML_REPO)
        sys.path.append(str(ZENML_REPO))  # as ZenML imports it: `zenml_pipelines`
    return ZENML_REPO


@pytest.fixture(scope="session")
async def sleepy(serve: ServeFn) -> AsyncIterator[httpx.AsyncClient]:
    """The main test deployment: a sync pipeline run in the thread pool."""
    async with serve("sleepy", deployment="sleepy") as http:
        yield http


@pytest.fixture(scope="session")
async def async_sleepy(serve: ServeFn) -> AsyncIterator[httpx.AsyncClient]:
    async with serve("async_sleepy", deployment="async-sleepy") as http:
        yield http


async def wait_for_status(
    http: httpx.AsyncClient,
    run_id: str,
    statuses: set[str],
    timeout: float = 30.0,
    until: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, Any]:
    """Poll `GET /runs/{id}` until the run is in one of `statuses` (and `until` holds)."""
    deadline = asyncio.get_running_loop().time() + timeout
    run: dict[str, Any] = {}
    while asyncio.get_running_loop().time() < deadline:
        answer = await http.get(f"/runs/{run_id}")
        assert answer.status_code == 200, answer.text
        run = answer.json()
        if run["status"] in statuses and (until is None or until(run)):
            return run
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} never reached {statuses}; last seen: {run}")


async def submit(http: httpx.AsyncClient, parameters: dict[str, Any], **body: Any) -> str:
    answer = await http.post("/invoke", json={"parameters": parameters, "async": True, **body})
    assert answer.status_code == 202, answer.text
    return answer.json()["run_id"]


StreamEvent = tuple[str, dict[str, Any], float]
"""An event of `GET /runs/{id}/events`: its name, its data, when it arrived (`time.time()`)."""


async def follow_events(
    http: httpx.AsyncClient, run_id: str, after_first: Callable[[], Any] | None = None
) -> list[StreamEvent]:
    """A run's event stream, read until the server ends it; `after_first` is called
    once the first event arrived (the stream is then following the run)."""
    events: list[StreamEvent] = []
    async with http.stream("GET", f"/runs/{run_id}/events") as stream:
        assert stream.status_code == 200, await stream.aread()
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        name, data = "message", ""
        async for line in stream.aiter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = line.split(":", 1)[1].strip()
            elif not line and data:
                events.append((name, json.loads(data), time.time()))
                name, data = "message", ""
                if after_first is not None and len(events) == 1:
                    after_first()
    return events


def steps_shown(events: list[StreamEvent]) -> list[tuple[int, str]]:
    """Each step a run's stream showed, as `(position, name)` in order of appearance:
    from the first event (the whole run) and the `progress` events."""
    shown = [events[0][1]["progress"], *(data for name, data, _ in events if name == "progress")]
    return list(dict.fromkeys((p["steps_completed"], p["step"]) for p in shown if p and p["step"]))
