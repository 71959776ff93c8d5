"""Record the replay histories the tests replay (`tests/histories/`, issue 17).

    .venv/bin/python -m dev.record_histories [--tag 0.2.0] [--out tests/histories]

Starts a dev server and real `warmrun serve` processes of the test pipelines, makes
one run of each kind a deployment sees (succeeded, failed, cancelled, timed out,
resumed after its replica was SIGKILLed, with webhooks, started by another Temporal
client), and writes each workflow's history as `temporal workflow show -o json` does.

Record new histories when a change to `PipelineRun` or `WarmrunWebhookDelivery` is
released, with `--tag` (files `<kind>-<tag>.json`): keep the old files, since runs
the old code started may still be open somewhere. tests/test_replay.py replays every
file with today's code, so an incompatible change fails CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from warmrun.devserver import DevServer, free_port, stop_process, temporal_binary
from warmrun.run import WORKFLOW_TYPE, WebhookEvent, task_queue_for, webhook_delivery_id
from warmrun.webhooks import new_secret

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ROOT / "tests" / "pipelines.py"
OUT = ROOT / "tests" / "histories"
DEPLOYMENT = "histories"
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}


class Replica:
    """A `warmrun serve` process of the test pipelines."""

    def __init__(self, pipeline: str, deployment: str, temporal: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "TEMPORAL_ADDRESS": temporal,
            "WARMRUN_DEPLOYMENT": deployment,
            "WARMRUN_HEARTBEAT_TIMEOUT": "2",
            "WARMRUN_PROGRESS_INTERVAL": "0.2",
            "WARMRUN_WEBHOOK_SECRET": new_secret(),
            "WARMRUN_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        }
        command = [
            str(Path(sys.executable).parent / "warmrun"),
            "serve",
            f"{PIPELINES}:{pipeline}",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]
        with log.open("ab") as sink:
            self.process = subprocess.Popen(command, env=env, stdout=sink, stderr=sink)

    async def ready(self, timeout: float = 60) -> Replica:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"warmrun serve exited with {self.process.returncode}")
                try:
                    if (await http.get("/ready")).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError("warmrun serve did not become ready")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        stop_process(self.process)


@contextmanager
def webhook_receiver() -> Iterator[str]:
    """A loopback endpoint that accepts every delivery."""

    class Accept(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Accept)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()


async def wait_for(http: httpx.AsyncClient, run_id: str, statuses: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = (await http.get(f"/runs/{run_id}")).json()
        if run["status"] in statuses:
            return run
        await asyncio.sleep(0.1)
    raise RuntimeError(f"run {run_id} never reached {statuses}")


async def start(http: httpx.AsyncClient, parameters: dict[str, Any], **body: Any) -> str:
    answer = await http.post("/invoke", json={"parameters": parameters, "async": True, **body})
    answer.raise_for_status()
    return answer.json()["run_id"]


async def record_runs(temporal: str, logs: Path) -> dict[str, str]:
    """Make the runs; their names (the files' stems) and workflow IDs."""
    runs: dict[str, str] = {}
    sleepy = await Replica("sleepy", DEPLOYMENT, temporal, logs / "sleepy.log").ready()
    try:
        async with httpx.AsyncClient(base_url=sleepy.url, timeout=60) as http:
            runs["succeeded"] = await start(http, {"steps": 2}, run_name="nightly")
            runs["failed"] = await start(http, {"fail": "boom"})
            runs["timed_out"] = await start(http, {"seconds": 30}, timeout=1)
            runs["cancelled"] = await start(http, {"seconds": 30})
            await wait_for(http, runs["cancelled"], {"running"})
            (await http.delete(f"/runs/{runs['cancelled']}")).raise_for_status()
            with webhook_receiver() as url:
                events = [WebhookEvent.STARTED, WebhookEvent.SUCCEEDED]
                runs["with_webhooks"] = await start(
                    http, {"steps": 1}, callback_url=url, callback_events=events
                )
                await wait_for(http, runs["with_webhooks"], TERMINAL)
                for event in events:
                    delivery = webhook_delivery_id(runs["with_webhooks"], event)
                    await temporal_cli(temporal, "workflow", "result", "--workflow-id", delivery)
                    runs[f"webhook_delivery_{event}"] = delivery
            runs["started_by_another_client"] = f"another-client-{time.time_ns()}"
            await temporal_cli(
                temporal,
                "workflow",
                "execute",
                "--type",
                WORKFLOW_TYPE,
                "--task-queue",
                task_queue_for(DEPLOYMENT),
                "--workflow-id",
                runs["started_by_another_client"],
                "--input",
                json.dumps({"parameters": {"steps": 1}}),
            )
            for run_id in runs.values():
                if not run_id.startswith(runs["with_webhooks"] + "."):
                    await wait_for(http, run_id, TERMINAL)
    finally:
        sleepy.stop()

    journal = logs / "journal"
    deployment = f"{DEPLOYMENT}-resumed"
    lost = await Replica("journaled", deployment, temporal, logs / "journaled.log").ready()
    async with httpx.AsyncClient(base_url=lost.url, timeout=60) as http:
        parameters = {"journal": str(journal), "steps": 3, "step_seconds": 1.0}
        runs["resumed_after_lost_worker"] = await start(http, parameters)
    while not journal.exists():
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the first step's checkpoint reaches the server
    lost.kill()
    # The same build again: the run is pinned to it and resumes there.
    again = await Replica("journaled", deployment, temporal, logs / "journaled.log").ready()
    try:
        async with httpx.AsyncClient(base_url=again.url, timeout=60) as http:
            run = await wait_for(http, runs["resumed_after_lost_worker"], TERMINAL)
        if run["attempt"] < 2:
            raise RuntimeError(f"the run was not resumed: {run}")
    finally:
        again.stop()
    return runs


async def temporal_cli(address: str, *args: str) -> bytes:
    process = await asyncio.create_subprocess_exec(
        str(temporal_binary()),
        *args,
        "--address",
        address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"temporal {' '.join(args)}: {err.decode()}")
    return out


async def record(scratch: Path) -> dict[str, bytes]:
    """Each history's file stem and its JSON."""
    histories = {}
    async with DevServer(port=free_port(), ui_port=None, log_level="error") as server:
        runs = await record_runs(server.address, scratch)
        for name, workflow_id in runs.items():
            histories[name] = await temporal_cli(
                server.address, "workflow", "show", "--workflow-id", workflow_id, "-o", "json"
            )
    return histories


def main(out: Path, tag: str | None) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        histories = asyncio.run(record(Path(scratch)))
    out.mkdir(parents=True, exist_ok=True)
    for name, history in histories.items():
        stem = f"{name}-{tag}" if tag else name
        (out / f"{stem}.json").write_bytes(history)
        events = json.loads(history)["events"]
        print(f"{name}: {len(events)} events, ending {events[-1]['eventType']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="where the JSON files go")
    parser.add_argument("--tag", help="appended to the file names, e.g. the release")
    arguments = parser.parse_args()
    main(arguments.out, arguments.tag)
