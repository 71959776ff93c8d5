"""The processes under test and the meters on them.

The dev server, the `warmrun serve` subprocess of the noop pipeline, the raw worker in
this process, and what is read from /proc about each (CPU, per-thread CPU, RSS), plus
py-spy on the warmrun process with `--profile`. Nothing here decides what is measured
when: that is `phases`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
from raw_workflow import RawNoop, raw_noop
from temporalio.client import Client
from temporalio.worker import Worker

from warmrun.devserver import DevServer, die_with_parent
from warmrun.run import WORKFLOW_TYPE

from . import WORKLOADS
from .load import Callers

DEV = Path(__file__).resolve().parents[1]
ROOT = DEV.parent
NOOP_PIPELINE = f"{WORKLOADS / 'noop_pipeline.py'}:noop"
DEPLOYMENT = "bench"
RAW_TASK_QUEUE = "bench-raw"
WARMRUN_WORKFLOW = WORKFLOW_TYPE
MAX_CONCURRENT_RUNS = 8
"""warmrun's default; the raw worker gets the same number of activity slots."""

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PY_SPY_RATE_HZ = 250
"""Samples per second of `py-spy record` (`profile_summary` turns samples into ms)."""

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
) -> subprocess.Popen[bytes]:
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


@contextlib.asynccontextmanager
async def raw_worker(client: Client) -> AsyncIterator[Worker]:
    """The raw side's worker, in this process, as warmrun's shares the API's."""
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
    http: Callers, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0
) -> None:
    """Until `/ready` answers 200 (connected, worker polling); a dead process fails at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"warmrun serve exited with {process.returncode}; see {log}")
        with contextlib.suppress(aiohttp.ClientConnectionError):
            if (await http.get("/ready")).status_code == 200:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"warmrun serve not ready after {timeout}s; see {log}")


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
        command = [str(py_spy), "record", "--pid", str(self.pid), "--rate", str(PY_SPY_RATE_HZ)]
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
