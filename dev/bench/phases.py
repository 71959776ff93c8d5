"""What each phase measures: warmrun and its raw-Temporal counterpart, back to back.

`Bench` holds the operations (an async `POST /invoke`, a `start_workflow`, ...) and the
phases built from them (accept, sync, status, end-to-end, RSS); `accept_api_only` is
the accept phase against a second, worker-less warmrun. Each phase returns the dict
that lands under `results` in the JSON report.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from raw_workflow import WORKFLOW_NAME, RawNoop, RawNoopInput
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowHistoryEventFilterType,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from warmrun.devserver import free_port, stop_process

from .harness import (
    RAW_TASK_QUEUE,
    WARMRUN_WORKFLOW,
    CpuMeter,
    Profiler,
    rss_mb,
    start_warmrun,
    wait_http_ready,
)
from .load import Callers, drive
from .report import console
from .stats import Stats, combined, ratio, round_ratios, summarise, utilisation


@dataclass(frozen=True)
class Sizes:
    """How many operations each phase runs; `--quick` shrinks them all."""

    accept_c1: int = 500
    accept_c32: int = 2000
    sync: int = 300
    status: int = 1000
    e2e: int = 1000
    rss: int = 10_000
    warmup: int = 50

    @classmethod
    def quick(cls) -> Sizes:
        return cls(accept_c1=20, accept_c32=64, sync=10, status=20, e2e=50, rss=100, warmup=3)

    def scaled(self, factor: float) -> Sizes:
        """Every size times `factor` (at least 1): profiling runs, tinier smoke tests."""
        return Sizes(**{name: max(1, round(n * factor)) for name, n in asdict(self).items()})


ROUNDS = 4
"""Throughput phases alternate their sides in this many rounds: on a shared 2-core VM
throughput drifts by 10-20% within minutes, which one A-then-B pass would report as a
difference between A and B."""


@dataclass
class Side:
    """One side of an alternating measurement: its operation and, when its runs must
    complete before the next measurement, their workflow type."""

    operation: Callable[[int], Awaitable[Any]]
    workflow_type: str | None = None


class Bench:
    """The phases, each measuring warmrun and its raw-Temporal counterpart back to back
    against the same server, so that both see the same machine state."""

    def __init__(
        self,
        sizes: Sizes,
        callers: Callers,
        raw: Client,
        warmrun_pid: int,
        server_pid: int,
        profiler: Profiler,
    ) -> None:
        self.sizes = sizes
        self.callers = callers
        self.raw = raw
        self.warmrun_pid = warmrun_pid
        self.server_pid = server_pid
        self.profiler = profiler
        self.pids = {"warmrun": warmrun_pid, "server": server_pid, "bench": os.getpid()}

    @property
    def http(self) -> Callers:
        """HTTP calls, each on the session of the lane it runs in."""
        return self.callers

    # -- operations ---------------------------------------------------------------------

    async def invoke_async(self, _: int = 0, seconds: float = 0.0, padding: int = 0) -> str:
        parameters: dict[str, Any] = {"seconds": seconds} if seconds else {}
        if padding:
            parameters["padding"] = padding
        answer = await self.http.post("/invoke", json={"parameters": parameters, "async": True})
        if answer.status_code != 202:
            raise RuntimeError(f"async invoke answered {answer.status_code}: {answer.text}")
        return answer.json()["run_id"]

    async def invoke_sync(self, _: int = 0) -> None:
        answer = await self.http.post("/invoke", json={"parameters": {}})
        if answer.status_code != 200 or not answer.json()["success"]:
            raise RuntimeError(f"sync invoke answered {answer.status_code}: {answer.text}")

    async def get_run(self, run_id: str, expected: str) -> None:
        answer = await self.http.get(f"/runs/{run_id}")
        if answer.status_code != 200 or answer.json()["status"] != expected:
            raise RuntimeError(f"GET /runs answered {answer.status_code}: {answer.text}")

    async def raw_start(
        self, seconds: float = 0.0, *, eager: bool = False, task_queue: str = RAW_TASK_QUEUE
    ) -> WorkflowHandle:
        return await self.raw.start_workflow(
            RawNoop.run,
            RawNoopInput(seconds=seconds),
            id=f"raw-{secrets.token_urlsafe(16)}",
            task_queue=task_queue,
            request_eager_start=eager,
        )

    # -- phase helpers --------------------------------------------------------------------

    async def measure(
        self,
        name: str,
        operation: Callable[[int], Awaitable[None]],
        n: int,
        concurrency: int,
        *,
        profile: bool = False,
        keep: list[float] | None = None,
    ) -> Stats:
        """Warm up, then measure `n` operations with CPU accounting (their latencies
        are added to `keep` when given)."""
        await drive(operation, min(self.sizes.warmup, n), concurrency)
        meter = CpuMeter(self.pids, threads_of=self.warmrun_pid)
        with self.profiler.phase(name, n) if profile else contextlib.nullcontext():
            meter.start()
            latencies, seconds = await drive(operation, n, concurrency)
            cpu = meter.stop(n)
        if keep is not None:
            keep.extend(latencies)
        stats = summarise(latencies, seconds, concurrency)
        stats.extra.update(cpu)
        stats.extra["cpu_utilisation"] = utilisation(cpu["cpu_ms_per_op"], n, seconds)
        console.log(
            f"{name}: n={n} c={concurrency} {stats.throughput}/s "
            f"p50={stats.p50_ms}ms p99={stats.p99_ms}ms"
        )
        return stats

    async def count(self, query: str) -> int:
        return (await self.raw.count_workflows(query)).count

    async def completed_since(
        self, workflow_type: str, since: str, n: int, timeout: float = 1800.0
    ) -> float:
        """Wait until `n` runs of `workflow_type` started since `since` completed."""
        deadline = time.monotonic() + timeout
        window = f"WorkflowType = '{workflow_type}' AND StartTime >= '{since}'"
        while time.monotonic() < deadline:
            if await self.count(f"{window} AND ExecutionStatus = 'Completed'") >= n:
                return time.perf_counter()
            await asyncio.sleep(0.05)
        closed_badly = await self.count(
            f"{window} AND ExecutionStatus != 'Completed' AND ExecutionStatus != 'Running'"
        )
        raise RuntimeError(
            f"{workflow_type}: {n} runs not completed after {timeout}s ({closed_badly} failed)"
        )

    async def alternate(
        self,
        label: str,
        sides: dict[str, Side],
        n: int,
        concurrency: int,
        *,
        profile: str | None = None,
    ) -> dict[str, Stats]:
        """Measure each side `n` times in `ROUNDS` alternating rounds (order reversed
        every other round), waiting for a side's runs to complete before the next
        measurement, so that drift of the machine hits every side alike."""
        per_round = max(1, n // ROUNDS)
        parts: dict[str, list[Stats]] = {name: [] for name in sides}
        latencies: dict[str, list[float]] = {name: [] for name in sides}
        for number in range(ROUNDS):
            order = list(sides) if number % 2 == 0 else list(reversed(sides))
            for name in order:
                side = sides[name]
                since = server_time_floor()
                parts[name].append(
                    await self.measure(
                        f"{label}_{name}_round{number + 1}",
                        side.operation,
                        per_round,
                        concurrency,
                        profile=name == profile and number == 0,
                        keep=latencies[name],
                    )
                )
                if side.workflow_type:
                    started = min(self.sizes.warmup, per_round) + per_round
                    await self.completed_since(side.workflow_type, since, started)
        return {name: combined(parts[name], latencies[name]) for name in sides}

    # -- phases -------------------------------------------------------------------------

    async def accept(self, concurrency: int, n: int) -> dict[str, Any]:
        """202s of `POST /invoke` vs `start_workflow`. The runs execute meanwhile in the
        same processes, as in production; each side's backlog is waited for before the
        next measurement so that it never slows another."""

        async def raw_start(_: int) -> None:
            await self.raw_start()

        async def raw_start_eager(_: int) -> None:
            await self.raw_start(eager=True)

        sides = await self.alternate(
            f"accept_c{concurrency}",
            {
                "warmrun": Side(lambda i: self.invoke_async(i), WARMRUN_WORKFLOW),
                "raw": Side(raw_start, WORKFLOW_NAME),
                "raw_eager": Side(raw_start_eager, WORKFLOW_NAME),
            },
            n,
            concurrency,
            profile="warmrun",
        )
        warm, raw = sides["warmrun"], sides["raw"]
        return {
            **{side: asdict(stats) for side, stats in sides.items()},
            "ratio": {
                "throughput": ratio(warm.throughput, raw.throughput),
                "throughput_rounds": round_ratios(warm, raw),
                "p50": ratio(warm.p50_ms, raw.p50_ms),
                "p99": ratio(warm.p99_ms, raw.p99_ms),
                "throughput_vs_eager": ratio(warm.throughput, sides["raw_eager"].throughput),
                "p50_vs_eager": ratio(warm.p50_ms, sides["raw_eager"].p50_ms),
            },
        }

    async def sync(self, n: int) -> dict[str, Any]:
        warm = await self.measure("sync_warmrun", self.invoke_sync, n, 1, profile=True)
        eager_hits = 0

        async def raw_execute(eager: bool) -> None:
            nonlocal eager_hits
            handle = await self.raw_start(eager=eager)
            eager_hits += bool(getattr(handle, "__temporal_eagerly_started", False))
            result = await handle.result()
            if result != {"ok": True}:
                raise RuntimeError(f"raw workflow returned {result!r}")

        raw_eager = await self.measure("sync_raw_eager", lambda _: raw_execute(True), n, 1)
        raw_eager.extra["eagerly_started"] = f"{eager_hits} of {min(self.sizes.warmup, n) + n}"
        eager_hits = 0
        raw_plain = await self.measure("sync_raw", lambda _: raw_execute(False), n, 1)
        return {
            "warmrun": asdict(warm),
            "raw_eager": asdict(raw_eager),
            "raw": asdict(raw_plain),
            "ratio": {
                "p50_vs_eager": ratio(warm.p50_ms, raw_eager.p50_ms),
                "p99_vs_eager": ratio(warm.p99_ms, raw_eager.p99_ms),
                "p50_vs_plain": ratio(warm.p50_ms, raw_plain.p50_ms),
                "p99_vs_plain": ratio(warm.p99_ms, raw_plain.p99_ms),
            },
        }

    async def status(self, n: int) -> dict[str, Any]:
        """`GET /runs/{id}` of a finished and of a running run; raw: what a Temporal
        app would call for the same answer (`describe`, plus the history once closed)."""

        async def health(_: int) -> None:
            answer = await self.http.get("/health")
            if answer.status_code != 200:
                raise RuntimeError(f"GET /health answered {answer.status_code}")

        # The floor of any route: HTTP + uvicorn + FastAPI, no Temporal call.
        floor = await self.measure("health_floor_warmrun", health, n, 1)
        finished_id = await self.invoke_async()
        await self._until(finished_id, "succeeded")
        finished = await self.measure(
            "status_finished_warmrun",
            lambda _: self.get_run(finished_id, "succeeded"),
            n,
            1,
            profile=True,
        )
        # A finished run whose outputs do not fit in the memo: they are then read from
        # its close event, a second Temporal call.
        large_id = await self.invoke_async(padding=4096)
        await self._until(large_id, "succeeded")
        from_history = await self.measure(
            "status_finished_history_warmrun",
            lambda _: self.get_run(large_id, "succeeded"),
            n,
            1,
            profile=True,
        )
        raw_done = await self.raw_start()
        await raw_done.result()

        async def raw_describe_finished(_: int) -> None:
            await raw_done.describe()

        async def raw_finished(_: int) -> None:
            await raw_done.describe()
            await raw_done.fetch_history(
                event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT
            )

        raw_describe_stats = await self.measure(
            "status_finished_raw_describe", raw_describe_finished, n, 1
        )
        raw_finished_stats = await self.measure("status_finished_raw", raw_finished, n, 1)

        running_id = await self.invoke_async(seconds=3600)
        raw_running = await self.raw_start(seconds=3600)
        try:
            await self._until(running_id, "running")
            running = await self.measure(
                "status_running_warmrun",
                lambda _: self.get_run(running_id, "running"),
                n,
                1,
                profile=True,
            )

            async def raw_describe(_: int) -> None:
                await raw_running.describe()

            raw_running_stats = await self.measure("status_running_raw", raw_describe, n, 1)
        finally:
            await self.http.delete(f"/runs/{running_id}")
            await raw_running.cancel()
        await self._until(running_id, "cancelled")
        with contextlib.suppress(WorkflowFailureError):
            await raw_running.result()
        return {
            "http_floor": {"warmrun": asdict(floor)},
            "finished": {
                "warmrun": asdict(finished),
                "raw": asdict(raw_describe_stats),
                "ratio": {"p50": ratio(finished.p50_ms, raw_describe_stats.p50_ms)},
            },
            "finished_from_history": {
                "warmrun": asdict(from_history),
                "raw": asdict(raw_finished_stats),
                "ratio": {"p50": ratio(from_history.p50_ms, raw_finished_stats.p50_ms)},
            },
            "running": {
                "warmrun": asdict(running),
                "raw": asdict(raw_running_stats),
                "ratio": {"p50": ratio(running.p50_ms, raw_running_stats.p50_ms)},
            },
        }

    async def _until(self, run_id: str, status: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = await self.http.get(f"/runs/{run_id}")
            if answer.json().get("status") == status:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"run {run_id} never became {status}")

    async def end_to_end(self, n: int) -> dict[str, Any]:
        """Submit `n` runs at concurrency 32, then wait until all have succeeded."""

        async def raw_start(_: int) -> None:
            await self.raw_start()

        results: dict[str, Any] = {}
        for side, workflow_type, submit in (
            ("warmrun", WARMRUN_WORKFLOW, self.invoke_async),
            ("raw", WORKFLOW_NAME, raw_start),
        ):
            since = server_time_floor()
            meter = CpuMeter(self.pids, threads_of=self.warmrun_pid)
            name = f"e2e_{side}"
            with self.profiler.phase(name, n) if side == "warmrun" else contextlib.nullcontext():
                meter.start()
                began = time.perf_counter()
                _, submitted_in = await drive(submit, n, 32)
                done = await self.completed_since(workflow_type, since, n)
                cpu = meter.stop(n)
            seconds = done - began
            results[side] = {
                "n": n,
                "submit_seconds": round(submitted_in, 3),
                "seconds": round(seconds, 3),
                "runs_per_s": round(n / seconds, 1),
                **cpu,
            }
            console.log(f"{name}: {n} runs in {seconds:.2f}s = {n / seconds:.1f} runs/s")
        results["ratio"] = {
            "runs_per_s": ratio(results["warmrun"]["runs_per_s"], results["raw"]["runs_per_s"])
        }
        return results

    async def rss(self, n: int, checkpoints: int = 10) -> dict[str, Any]:
        """RSS of the warmrun process after every tenth of `n` runs (a plateau is warm
        caches filling; a steady slope is a leak)."""
        settle = 1.0 if n >= 1000 else 0.2  # let freed memory and GC settle before reading
        await asyncio.sleep(settle)
        before = rss_mb(self.warmrun_pid)
        curve: list[dict[str, float]] = []
        chunk = max(1, n // checkpoints)
        done = 0
        while done < n:
            size = min(chunk, n - done)
            since = server_time_floor()
            await drive(self.invoke_async, size, 32)
            await self.completed_since(WARMRUN_WORKFLOW, since, size)
            done += size
            curve.append({"runs": done, "rss_mb": round(rss_mb(self.warmrun_pid), 1)})
            console.log(f"rss: {done} runs, {curve[-1]['rss_mb']} MB")
        await asyncio.sleep(2 * settle)
        after = rss_mb(self.warmrun_pid)
        half = next((point for point in curve if point["runs"] >= n / 2), curve[0])
        return {
            "runs": n,
            "before_mb": round(before, 1),
            "after_mb": round(after, 1),
            "growth_mb": round(after - before, 1),
            "growth_second_half_mb": round(after - half["rss_mb"], 1),
            "curve": curve,
        }


async def accept_api_only(
    bench: Bench, address: str, env: dict[str, str], log_level: str, out_dir: Path
) -> dict[str, Any]:
    """The accept path alone: `warmrun serve --no-worker` vs `start_workflow` on a task
    queue no worker polls. Nothing executes, so neither side shares its CPU with runs
    (and warmrun does not request eager start); the runs stay queued until the dev
    server is stopped."""
    port = free_port()
    log = out_dir / "warmrun-api-only.log"
    process = start_warmrun(
        address, port, log_level, log, env, "--no-worker", deployment="bench-api-only"
    )
    results: dict[str, Any] = {}
    try:
        async with Callers(f"http://127.0.0.1:{port}") as callers:
            await wait_http_ready(callers, process, log)
            api = Bench(
                bench.sizes, callers, bench.raw, process.pid, bench.server_pid, Profiler(0, None)
            )

            async def raw_start(_: int) -> None:
                await api.raw_start(task_queue="bench-no-worker")

            async def raw_start_like_warmrun(_: int) -> None:
                """The start options warmrun sends (memo, UI summary and details, ID
                policies, execution timeout): what they cost the server, without HTTP."""
                await bench.raw.start_workflow(
                    RawNoop.run,
                    RawNoopInput(),
                    id=f"raw-{secrets.token_urlsafe(16)}",
                    task_queue="bench-no-worker",
                    execution_timeout=timedelta(hours=1, minutes=2),
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                    memo={"pipeline_name": "noop", "run_name": None},
                    static_summary="noop",
                    static_details='Parameters:\n```json\n{\n  "seconds": 0.0\n}\n```',
                )

            for concurrency, n in ((1, bench.sizes.accept_c1), (32, bench.sizes.accept_c32)):
                sides = await api.alternate(
                    f"accept_api_only_c{concurrency}",
                    {
                        "warmrun": Side(api.invoke_async),
                        "raw": Side(raw_start),
                        "raw_like_warmrun": Side(raw_start_like_warmrun),
                    },
                    n,
                    concurrency,
                )
                warm, raw, like = sides["warmrun"], sides["raw"], sides["raw_like_warmrun"]
                results[f"c{concurrency}"] = {
                    "warmrun": asdict(warm),
                    "raw": asdict(raw),
                    "raw_like_warmrun": asdict(like),
                    "ratio": {
                        "throughput": ratio(warm.throughput, raw.throughput),
                        "throughput_rounds": round_ratios(warm, raw),
                        "p50": ratio(warm.p50_ms, raw.p50_ms),
                        "p99": ratio(warm.p99_ms, raw.p99_ms),
                        "throughput_vs_like": ratio(warm.throughput, like.throughput),
                    },
                }
    finally:
        stop_process(process)
    return results


def server_time_floor() -> str:
    """Now, minus a millisecond, as a visibility-query timestamp (same host clock)."""
    now = datetime.now(UTC) - timedelta(milliseconds=1)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
