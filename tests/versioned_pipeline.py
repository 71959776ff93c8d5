"""A pipeline shipped in versions: tests/reliability/test_upgrades.py copies this file
with another `CODE`, so that each copy is other code and, by default, another build."""

from __future__ import annotations

import os
import time

from warmrun import RunContext

CODE = "v1"


def wait_for_gate(gate: str | None) -> None:
    """Block until the file `gate` exists: the test decides when the run goes on."""
    while gate is not None and not os.path.exists(gate):
        time.sleep(0.05)


def _step(journal: str, index: int, seconds: float, gate: str | None = None) -> dict:
    wait_for_gate(gate)
    time.sleep(seconds)
    with open(journal, "a") as lines:
        lines.write(f"{index} {os.getpid()} {CODE}\n")
    return {"index": index, "code": CODE}


def upgradable(
    ctx: RunContext,
    journal: str,
    steps: int = 4,
    step_seconds: float = 1.0,
    gate: str | None = None,
    gate_at: int = 0,
) -> dict:
    """Checkpointed steps that append `<index> <pid> <code>` to `journal` as they
    complete: the journal shows which code ran each step, in which process. Steps from
    `gate_at` on begin only once the file `gate` exists."""
    ctx.steps_total = steps
    done = [
        ctx.step(
            f"step-{index}",
            _step,
            journal,
            index,
            step_seconds,
            gate if index >= gate_at else None,
        )
        for index in range(steps)
    ]
    return {"code": CODE, "steps": done, "finished_by": os.getpid()}
