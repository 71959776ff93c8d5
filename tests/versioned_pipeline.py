"""A pipeline shipped in versions: tests/reliability/test_upgrades.py copies this file
with another `CODE`, so that each copy is other code and, by default, another build."""

from __future__ import annotations

import os
import time

from warmrun import RunContext

CODE = "v1"


def _step(journal: str, index: int, seconds: float) -> dict:
    time.sleep(seconds)
    with open(journal, "a") as lines:
        lines.write(f"{index} {os.getpid()} {CODE}\n")
    return {"index": index, "code": CODE}


def upgradable(ctx: RunContext, journal: str, steps: int = 4, step_seconds: float = 1.0) -> dict:
    """Checkpointed steps that append `<index> <pid> <code>` to `journal` as they
    complete: the journal shows which code ran each step, in which process."""
    ctx.steps_total = steps
    done = [
        ctx.step(f"step-{index}", _step, journal, index, step_seconds) for index in range(steps)
    ]
    return {"code": CODE, "steps": done, "finished_by": os.getpid()}
