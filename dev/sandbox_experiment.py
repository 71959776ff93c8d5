"""What the workflow sandbox and the first heartbeat cost each warmrun run, measured.

    .venv/bin/python dev/sandbox_experiment.py [--runs 300] [--out dev/results/sandbox.json]

The profile of `bench.py` shows the warmrun process spending most of a noop run in
`SandboxedWorkflowRunner.create_instance`, re-importing the `warmrun` package for every
new workflow. This script runs warmrun's own `PipelineRun` workflow and activities
(unchanged, from src/) on workers configured differently, one variant at a time, in
one process against one fresh dev server, and reports for each: runs/s at concurrency
32, sync p50 (eager start, concurrency 1), and CPU ms per run of this process and of
the server. The variants are the proposed worker changes, so their gain is a
measurement rather than a guess. `RawNoop` is the reference.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench import BenchServer, cache_bytecode, cpu_seconds, percentile
from raw_workflow import RawNoop, RawNoopInput, raw_noop
from rich.console import Console
from rich.table import Table
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from warmrun.activities import PipelineActivities
from warmrun.devserver import free_port
from warmrun.pipeline import load_pipeline
from warmrun.settings import Settings
from warmrun.workflows import PipelineRun, PipelineRunInput

DEV = Path(__file__).resolve().parent
console = Console(width=180)


class LazyHeartbeat(PipelineActivities):
    """`run_pipeline` whose first heartbeat waits one spacing, so a run that ends
    sooner sends none (today the first is sent at once, an RPC per run)."""

    async def _heartbeat(self, *args: Any) -> None:
        await asyncio.sleep(min(self._settings.progress_interval, self._settings.heartbeat_timeout))
        await super()._heartbeat(*args)


def passthrough(*modules: str) -> WorkflowRunner:
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*modules)
    )


VARIANTS: dict[str, tuple[WorkflowRunner, type[PipelineActivities]]] = {
    "default sandbox (warmrun before e1f1d6e)": (SandboxedWorkflowRunner(), PipelineActivities),
    "sandbox, pass through warmrun.context + .contract": (
        passthrough("warmrun.context", "warmrun.workflows.contract"),
        PipelineActivities,
    ),
    "sandbox, pass through warmrun (since e1f1d6e)": (
        passthrough("warmrun"),
        PipelineActivities,
    ),
    "sandbox, pass through warmrun + lazy heartbeat": (passthrough("warmrun"), LazyHeartbeat),
    "unsandboxed + lazy heartbeat": (UnsandboxedWorkflowRunner(), LazyHeartbeat),
}


async def measure(
    client: Client,
    server_pid: int,
    start: Callable[[bool], Coroutine[Any, Any, Any]],
    runs: int,
    sync_runs: int,
) -> dict[str, Any]:
    """Throughput of `runs` at concurrency 32 (start, then wait for the result) and
    the latency of `sync_runs` eager starts one at a time."""

    handles: list[Any] = []

    async def one(eager: bool) -> float:
        began = time.perf_counter()
        handle = await start(eager)
        await handle.result()
        if eager:
            handles.append(handle)
        return time.perf_counter() - began

    for _ in range(10):  # warm-up: caches, connections, first sandbox
        await one(False)
    indices = iter(range(runs))

    async def lane() -> None:
        for _ in indices:
            await one(False)

    own, server = cpu_seconds(os.getpid()), cpu_seconds(server_pid)
    began = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(32)))
    seconds = time.perf_counter() - began
    own, server = cpu_seconds(os.getpid()) - own, cpu_seconds(server_pid) - server
    latencies = sorted([await one(True) for _ in range(sync_runs)])
    return {
        "sync_timeline_ms": await timeline(handles),
        "runs_per_s": round(runs / seconds, 1),
        "process_cpu_ms_per_run": round(own * 1000 / runs, 2),
        "server_cpu_ms_per_run": round(server * 1000 / runs, 2),
        "sync_eager_p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "sync_eager_p90_ms": round(percentile(latencies, 0.9) * 1000, 2),
    }


SEGMENTS = {
    "first workflow task (eager)": ("workflow_task_started", 0, "workflow_task_completed", 0),
    "activity scheduled -> completed": ("activity_task_scheduled", 0, "activity_task_completed", 0),
    "second workflow task dispatch": ("workflow_task_scheduled", 1, "workflow_task_started", 1),
    "second workflow task": ("workflow_task_started", 1, "workflow_task_completed", 1),
    "start -> workflow completed": (
        "workflow_execution_started",
        0,
        "workflow_execution_completed",
        0,
    ),
}
"""Spans of a sync run's history, by event type and occurrence (server timestamps)."""


async def timeline(handles: list[Any]) -> dict[str, float]:
    """Median ms of each span over the given finished runs: where a run's time goes."""
    spans: dict[str, list[float]] = {name: [] for name in SEGMENTS}
    for handle in handles:
        times: dict[str, list[float]] = {}
        for event in (await handle.fetch_history()).events:
            kind = (event.WhichOneof("attributes") or "").removesuffix("_event_attributes")
            times.setdefault(kind, []).append(event.event_time.ToMicroseconds() / 1000)
        for name, (first, i, last, j) in SEGMENTS.items():
            with contextlib.suppress(KeyError, IndexError):
                spans[name].append(times[last][j] - times[first][i])
    return {name: round(statistics.median(v), 1) for name, v in spans.items() if v}


async def history_shape(handle: Any) -> list[str]:
    """Event types of one finished run, to compare the work the server does per run."""
    await handle.result()
    history = await handle.fetch_history()
    return [event.WhichOneof("attributes") or "?" for event in history.events]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    if not args.no_bytecode_cache:
        cache_bytecode(args.out.parent / "pycache")
    pipeline = load_pipeline(f"{DEV / 'noop_pipeline.py'}:noop")
    settings = Settings()
    results: dict[str, Any] = {}
    server = BenchServer(port=free_port(), ui_port=None, log_level="error")
    async with server:
        client = await Client.connect(server.address)

        async def raw(eager: bool, queue: str = "exp-raw") -> Any:
            return await client.start_workflow(
                RawNoop.run,
                RawNoopInput(),
                id=f"raw-{secrets.token_urlsafe(12)}",
                task_queue=queue,
                request_eager_start=eager,
            )

        async with Worker(
            client,
            task_queue="exp-raw",
            workflows=[RawNoop],
            activities=[raw_noop],
            max_concurrent_activities=settings.max_concurrent_runs,
        ):
            results["raw RawNoop (reference)"] = await measure(
                client, server.pid, raw, args.runs, args.sync_runs
            )
            shape = await history_shape(await raw(False))
            await asyncio.sleep(0.5)
        results["raw RawNoop (reference)"]["history_events"] = len(shape)
        results["raw RawNoop (reference)"]["history"] = shape
        console.log(f"raw history ({len(shape)} events): {shape}")

        for index, (name, (runner, activities_class)) in enumerate(VARIANTS.items()):
            queue = f"exp-{index}"
            activities = activities_class(pipeline, settings)
            worker = Worker(
                client,
                task_queue=queue,
                workflows=[PipelineRun],
                activities=[activities.resolve_run_policy, activities.run_pipeline],
                workflow_runner=runner,
                max_concurrent_activities=settings.max_concurrent_runs,
                max_heartbeat_throttle_interval=timedelta(seconds=settings.progress_interval),
                default_heartbeat_throttle_interval=timedelta(seconds=settings.progress_interval),
            )

            async def start(eager: bool, queue: str = queue) -> Any:
                return await client.start_workflow(
                    PipelineRun.run,
                    PipelineRunInput(parameters={}),
                    id=secrets.token_urlsafe(16),
                    task_queue=queue,
                    request_eager_start=eager,
                )

            async with worker:
                results[name] = await measure(client, server.pid, start, args.runs, args.sync_runs)
                shape = await history_shape(await start(False))
                await asyncio.sleep(0.5)
            results[name]["history_events"] = len(shape)
            results[name]["history"] = shape
            if index == 0:
                console.log(f"warmrun history ({len(shape)} events): {shape}")
            console.log(f"{name}: {results[name]}")
    return results


def print_table(results: dict[str, Any]) -> None:
    table = Table(title="PipelineRun per-run cost by worker configuration")
    columns = [
        "runs_per_s",
        "process_cpu_ms_per_run",
        "server_cpu_ms_per_run",
        "sync_eager_p50_ms",
        "history_events",
    ]
    table.add_column("variant")
    for column in columns:
        table.add_column(column, justify="right")
    for name, row in results.items():
        table.add_row(name, *(str(row[column]) for column in columns))
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--sync-runs", type=int, default=40)
    parser.add_argument("--out", type=Path, default=DEV / "results" / "sandbox.json")
    parser.add_argument("--no-bytecode-cache", action="store_true")
    arguments = parser.parse_args()
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    measured = asyncio.run(main(arguments))
    arguments.out.write_text(json.dumps(measured, indent=2))
    print_table(measured)
    sys.exit(0)
