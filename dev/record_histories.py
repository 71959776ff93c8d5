"""Record the replay histories the tests replay (`tests/histories/`, issue 17).

    .venv/bin/python -m dev.record_histories [--tag 0.2.0] [--out tests/histories]

Starts a dev server and real `warmrun serve` processes of the test pipelines, makes
one run of each kind a deployment sees (succeeded, failed, cancelled, timed out,
resumed after its replica was SIGKILLed, with webhooks, started by another Temporal
client, started over Nexus from another namespace, of a ZenML pipeline that succeeded
and one that failed, on a throwaway ZenML store), and writes each workflow's history
as `temporal workflow show -o json` does. `--kinds` records only the kinds named.

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
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from warmrun.devserver import DevServer, free_port, stop_process, temporal_binary
from warmrun.nexus import ensure_nexus_endpoint
from warmrun.run import WORKFLOW_TYPE, WebhookEvent, task_queue_for, webhook_delivery_id
from warmrun.temporal import PipelineRunInput, WarmrunService, nexus_run_id
from warmrun.webhooks import new_secret

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ROOT / "tests" / "pipelines.py"
ZENML_REPO = ROOT / "tests" / "zenml_repo"
OUT = ROOT / "tests" / "histories"
DEPLOYMENT = "histories"
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}
CALLERS_NAMESPACE = "callers"
KINDS = ("plain", "resumed", "nexus", "zenml")
"""Groups of kinds, for `--kinds`: the files each group writes are listed in
tests/histories/README.md."""


class Replica:
    """A `warmrun serve` process: a pipeline of tests/pipelines.py, or a reference."""

    def __init__(
        self,
        pipeline: str,
        deployment: str,
        temporal: str,
        log: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            **(env or {}),
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
            pipeline if ":" in pipeline else f"{PIPELINES}:{pipeline}",
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


async def record_runs(temporal: str, logs: Path, kinds: set[str]) -> dict[str, str]:
    """Make the runs of the groups in `kinds`; their names (the files' stems) and
    workflow IDs."""
    runs: dict[str, str] = {}
    if "plain" in kinds:
        runs |= await record_plain_runs(temporal, logs)
    if "resumed" in kinds:
        runs |= await record_resumed_run(temporal, logs)
    if "nexus" in kinds:
        runs |= await record_nexus_run(temporal, logs)
    if "zenml" in kinds:
        runs |= await record_zenml_runs(temporal, logs)
    return runs


async def record_plain_runs(temporal: str, logs: Path) -> dict[str, str]:
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
    return runs


async def record_resumed_run(temporal: str, logs: Path) -> dict[str, str]:
    runs: dict[str, str] = {}
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


@workflow.defn(sandboxed=False)
class CallOverNexus:
    """A workflow of another application, in a namespace of its own, calling a run."""

    @workflow.run
    async def run(self, endpoint: str) -> str:
        client = workflow.create_nexus_client(service=WarmrunService, endpoint=endpoint)
        operation = await client.start_operation(
            WarmrunService.run,
            PipelineRunInput(parameters={"steps": 2}, run_name="over Nexus"),
            schedule_to_close_timeout=timedelta(minutes=2),
        )
        await operation
        return nexus_run_id(operation)


async def record_nexus_run(temporal: str, logs: Path) -> dict[str, str]:
    """A run started by the Nexus operation `run` from a workflow in another namespace
    (its start event carries the caller's completion callback and links)."""
    deployment = f"{DEPLOYMENT}-nexus"
    await temporal_cli(
        temporal, "operator", "namespace", "create", "--namespace", CALLERS_NAMESPACE
    )
    endpoint = await ensure_nexus_endpoint(await Client.connect(temporal), deployment)
    replica = await Replica("sleepy", deployment, temporal, logs / "nexus.log").ready()
    try:
        callers = await Client.connect(temporal, namespace=CALLERS_NAMESPACE)
        async with Worker(
            callers,
            task_queue="nexus-callers",
            workflows=[CallOverNexus],
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            run_id = await callers.execute_workflow(
                CallOverNexus.run,
                endpoint,
                id=f"call-over-nexus-{time.time_ns()}",
                task_queue="nexus-callers",
            )
    finally:
        replica.stop()
    return {"started_over_nexus": run_id}


async def record_zenml_runs(temporal: str, logs: Path) -> dict[str, str]:
    """Runs of a ZenML pipeline (its run link signal; the close activity of a run that
    did not succeed), on a throwaway ZenML store and repository under `logs`."""
    home = logs / "zenml"
    repo = home / "repo"
    shutil.copytree(ZENML_REPO, repo)
    env = {
        "ZENML_CONFIG_PATH": str(home / "config"),
        "ZENML_LOCAL_STORES_PATH": str(home / "stores"),
        "ZENML_REPOSITORY_PATH": str(repo),
        "ZENML_ANALYTICS_OPT_IN": "false",
        "AUTO_OPEN_DASHBOARD": "false",
    }
    zenml = str(Path(sys.executable).parent / "zenml")
    init = await asyncio.create_subprocess_exec(zenml, "init", cwd=repo, env={**os.environ, **env})
    if await init.wait() != 0:
        raise RuntimeError("zenml init failed")
    runs: dict[str, str] = {}
    reference = f"{repo / 'zenml_pipelines.py'}:text_pipeline"
    replica = Replica(reference, f"{DEPLOYMENT}-zenml", temporal, logs / "zenml.log", env)
    await replica.ready(timeout=120)
    try:
        async with httpx.AsyncClient(base_url=replica.url, timeout=60) as http:
            runs["zenml_succeeded"] = await start(http, {"text": "a b c"})
            runs["zenml_failed"] = await start(http, {"fail_at": "count_tokens"})
            for run_id in runs.values():
                await wait_for(http, run_id, TERMINAL)
    finally:
        replica.stop()
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


async def record(scratch: Path, kinds: set[str]) -> dict[str, bytes]:
    """Each history's file stem and its JSON."""
    histories = {}
    server = DevServer(port=free_port(), ui_port=None, http_port=free_port(), log_level="error")
    async with server:
        runs = await record_runs(server.address, scratch, kinds)
        for name, workflow_id in runs.items():
            histories[name] = await temporal_cli(
                server.address, "workflow", "show", "--workflow-id", workflow_id, "-o", "json"
            )
    return histories


def main(out: Path, tag: str | None, kinds: set[str]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        histories = asyncio.run(record(Path(scratch), kinds))
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
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help=f"comma-separated groups of runs to record, of {', '.join(KINDS)} (default all)",
    )
    arguments = parser.parse_args()
    kinds = set(arguments.kinds.split(","))
    if not kinds <= set(KINDS):
        parser.error(f"unknown kinds: {', '.join(sorted(kinds - set(KINDS)))}")
    main(arguments.out, arguments.tag, kinds)
