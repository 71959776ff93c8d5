"""Real `warmrun serve` processes for the reliability suite: start, signal, kill."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from warmrun.devserver import free_port

WARMRUN = str(Path(sys.executable).parent / "warmrun")
PIPELINES = Path(__file__).resolve().parents[1] / "pipelines.py"

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}

FAST_FAILURE_DETECTION = {
    "WARMRUN_HEARTBEAT_TIMEOUT": "2",
    "WARMRUN_PROGRESS_INTERVAL": "0.2",
    "WARMRUN_CANCEL_GRACE": "10",
}


class Replica:
    """One `warmrun serve` process of a deployment, logging to a file. `pipeline` names
    one in tests/pipelines.py, or is a `path.py:function` reference."""

    def __init__(
        self,
        pipeline: str,
        *,
        deployment: str,
        temporal_address: str,
        log_dir: Path,
        **settings: Any,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"{deployment}-{self.port}.log"
        self.env = {
            **os.environ,
            **FAST_FAILURE_DETECTION,
            "TEMPORAL_ADDRESS": temporal_address,
            "PYTHONUNBUFFERED": "1",  # the log is read when a test fails
            "WARMRUN_DEPLOYMENT": deployment,
            **{f"WARMRUN_{name.upper()}": str(value) for name, value in settings.items()},
        }
        self.command = [
            WARMRUN,
            "serve",
            pipeline if ":" in pipeline else f"{PIPELINES}:{pipeline}",
            "--port",
            str(self.port),
            "--log-level",
            "info",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Replica:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    async def ready(self, timeout: float = 60) -> Replica:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            while time.monotonic() < deadline:
                assert self.process and self.process.poll() is None, self.tail()
                try:
                    if (await http.get("/ready")).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"replica never became ready:\n{self.tail()}")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def exit_code(self, timeout: float = 60) -> int:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            assert time.monotonic() < deadline, f"replica did not exit:\n{self.tail()}"
            await asyncio.sleep(0.1)
        return self.process.returncode

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def replica_starter(temporal_address: str, log_dir: Path) -> Iterator[Callable[..., Replica]]:
    """`start(pipeline, deployment="x", **settings)` starts a replica; every one started
    is killed on exit."""
    started: list[Replica] = []

    def start(pipeline: str, *, deployment: str, **settings: Any) -> Replica:
        replica = Replica(
            pipeline,
            deployment=deployment,
            temporal_address=temporal_address,
            log_dir=log_dir,
            **settings,
        )
        started.append(replica.start())
        return replica

    try:
        yield start
    finally:
        for replica in started:
            replica.stop()


async def poll_run(
    url: str,
    run_id: str,
    statuses: set[str],
    timeout: float = 60,
    until: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, Any]:
    """The run once its status is one of `statuses` (and `until` holds of it)."""
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        while time.monotonic() < deadline:
            answer = await http.get(f"/runs/{run_id}")
            if answer.status_code == 200:
                run = answer.json()
                if run["status"] in statuses and (until is None or until(run)):
                    return run
            await asyncio.sleep(0.2)
    raise AssertionError(f"run {run_id} never reached {statuses}: {run}")


async def submit_journaled(
    replica: Replica,
    journal: Path,
    steps: int,
    step_seconds: float = 1.0,
    gate: Path | None = None,
    gate_at: int = 0,
) -> str:
    """Start a run of a journalling pipeline (`journaled`, the versioned one) through
    `replica`; each step appends to `journal`. With a `gate`, steps from `gate_at` on
    wait for that file: the run stays in flight until the test creates it."""
    parameters: dict[str, Any] = {
        "journal": str(journal),
        "steps": steps,
        "step_seconds": step_seconds,
    }
    if gate is not None:
        parameters |= {"gate": str(gate), "gate_at": gate_at}
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as http:
        answer = await http.post("/invoke", json={"parameters": parameters, "async": True})
    assert answer.status_code == 202, answer.text
    return answer.json()["run_id"]


async def steps_reported(replica: Replica, run_id: str, count: int) -> None:
    """Wait until Temporal holds the run's heartbeat with `count` completed steps: their
    checkpoints, which a retry resumes from, travel in the same heartbeat."""
    await poll_run(
        replica.url,
        run_id,
        {"running"},
        timeout=30,
        until=lambda run: run["progress"]["steps_completed"] >= count,
    )
