"""Pipelines the tests deploy: small, controllable, honest about when they stop."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from warmrun import RetryableError, RunContext


def init() -> dict:
    """Warm state: a token that differs for every call, so tests can count warm-ups."""
    return {"token": uuid.uuid4().hex}


def sleepy(
    ctx: RunContext,
    seconds: float = 0.0,
    steps: int = 1,
    fail: str | None = None,
    marker: str | None = None,
    check_every: float = 0.02,
    fail_on_stop: str | None = None,
) -> dict:
    """Sleep `seconds` over `steps` named steps, checking for cancellation every
    `check_every` seconds; write the time the code stopped to `marker`. With
    `fail_on_stop`, asked to stop it raises that instead of stopping quietly."""
    ctx.steps_total = steps
    try:
        for index in range(steps):
            with ctx.step(f"step-{index + 1}"):
                deadline = time.monotonic() + seconds / steps
                while time.monotonic() < deadline:
                    if fail_on_stop and ctx.cancelled:
                        raise OSError(fail_on_stop)
                    ctx.check_cancelled()
                    time.sleep(min(check_every, max(deadline - time.monotonic(), 0)))
        if fail:
            raise ValueError(fail)
        return {"steps": steps, "warm_token": ctx.state["token"], "run_id": ctx.run_id}
    finally:
        if marker:
            Path(marker).write_text(repr(time.time()))


async def async_sleepy(ctx: RunContext, seconds: float = 0.0, marker: str | None = None) -> dict:
    """An `async def` pipeline: cancellation interrupts it at its `await`."""
    try:
        with ctx.step("sleep"):
            await asyncio.sleep(seconds)
        return {"slept": seconds, "run_id": ctx.run_id}
    finally:
        if marker:
            Path(marker).write_text(repr(time.time()))  # noqa: ASYNC240 - tiny, on purpose


def returns_a_number(scale: int = 2) -> int:
    """Its bare return value is wrapped under `result` in `outputs`."""
    return 21 * scale


def unserialisable() -> dict:
    """Returns something JSON cannot carry: the run must fail, not hang."""
    return {"handle": object()}


def big_output(size: int = 1_500_000) -> dict:
    """Returns `size` characters: over Temporal's payload limit when large."""
    return {"blob": "x" * size}


def echo(text: str = "", count: int = 0, flag: bool = False) -> dict:
    """A fast pipeline for fuzzing the API."""
    return {"text": text, "count": count, "flag": flag}


def measures(
    threshold: Annotated[float, Field(allow_inf_nan=True)] = 0.0,
    weights: list[Annotated[float, Field(allow_inf_nan=True)]] | None = None,
    exact: Annotated[float, Field(allow_inf_nan=True, strict=True)] = 0.0,
    scale: float = 1.0,
    tags: dict[str, Any] | None = None,
) -> dict:
    """Reports the floats it received as `repr` text: NaN and Infinity are allowed only
    where the type opts in (`threshold`, `weights`, `exact`)."""
    return {
        "threshold": repr(threshold),
        "weights": [repr(weight) for weight in weights or []],
        "scale": repr(scale),
        "tags": tags,
    }


HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x1b[31mRED\x9b1m\u202egnp.exe"
"""Escape sequences a terminal would obey: retitle, clear, colour (also as the C1
CSI), and a bidi override."""


def hostile(ctx: RunContext) -> dict:
    """Fails with escape sequences in its step name and error message."""
    with ctx.step(f"step{HOSTILE}"):
        time.sleep(0.3)
        raise ValueError(f"boom{HOSTILE}")


def wait_for_gate(gate: str | None) -> None:
    """Block until the file `gate` exists: the test decides when the run goes on."""
    while gate is not None and not os.path.exists(gate):
        time.sleep(0.05)


def _journaled_step(journal: str, index: int, seconds: float, gate: str | None = None) -> dict:
    wait_for_gate(gate)
    time.sleep(seconds)
    with open(journal, "a") as lines:
        lines.write(f"{index} {os.getpid()}\n")
    return {"index": index, "pid": os.getpid()}


def journaled(
    ctx: RunContext,
    journal: str,
    steps: int = 4,
    step_seconds: float = 1.0,
    gate: str | None = None,
    gate_at: int = 0,
) -> dict:
    """Checkpointed steps that append `<index> <pid>` to `journal` when they complete:
    the journal shows which steps ran, in which process, and how often. Steps from
    `gate_at` on begin only once the file `gate` exists."""
    ctx.steps_total = steps
    done = [
        ctx.step(
            f"step-{index}",
            _journaled_step,
            journal,
            index,
            step_seconds,
            gate if index >= gate_at else None,
        )
        for index in range(steps)
    ]
    return {"steps": done, "finished_by": os.getpid(), "attempt": ctx.attempt}


def flaky(ctx: RunContext, journal: str) -> dict:
    """Completes one checkpointed step, then fails retryably on its first attempt."""
    first = ctx.step("first", _journaled_step, journal, 0, 0.0)
    time.sleep(0.5)  # let the checkpoint reach the server in a heartbeat
    if ctx.attempt == 1:
        raise RetryableError("the GPU went away")
    second = ctx.step("second", _journaled_step, journal, 1, 0.0)
    return {"first": first, "second": second, "attempt": ctx.attempt}


def whoami(seconds: float = 0.0) -> dict:
    """Which replica ran me."""
    time.sleep(seconds)
    return {"pid": os.getpid()}


_ROWS = [{"id": i, "name": f"row {i}", "score": i * 0.5, "tags": ["a", "b"]} for i in range(15_000)]


def many_rows(rows: int = 15_000) -> dict:
    """Outputs of many small objects (~60 bytes each as JSON), what JSON encoders are
    slowest at per byte; made in advance, so that running it costs next to nothing."""
    return {"rows": _ROWS[:rows]}
