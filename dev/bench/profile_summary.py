"""Where the warmrun process spends its time, per benchmark phase, in ms per operation.

    .venv/bin/python -m dev.bench --quick --scale 6 --profile --out dev/results/profile/bench.json
    .venv/bin/python -m dev.bench.profile_summary dev/results/profile/bench.json

Reads the raw (collapsed) `py-spy record` stacks that `dev.bench --profile` writes next to
its JSON report, and turns sample counts into milliseconds of a thread being busy per
operation (py-spy skips idle threads), so findings read as "X ms of each request".
Areas are assigned by the first marker found in a stack, most specific first.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from .harness import PY_SPY_RATE_HZ

AREAS: list[tuple[str, tuple[str, ...]]] = [
    ("logging (access log, SDK log lines)", ("(logging/__init__.py", "uvicorn/logging.py")),
    ("workflow sandbox: new instance + imports", ("workflow_sandbox/_runner.py", "_importer.py")),
    ("workflow activation (sandboxed workflow code)", ("_WorkflowWorker._handle_activation",)),
    ("activity: run_pipeline / resolve_run_policy", ("warmrun/activities/",)),
    ("activity worker (SDK)", ("temporalio/worker/_activity.py",)),
    ("POST /invoke: admission control (visibility)", ("warmrun/services/backlog.py",)),
    ("POST /invoke: start_workflow", ("warmrun/services/start.py",)),
    ("POST /invoke: wait for result", ("_sync_answer (warmrun/api/routes/invoke.py",)),
    ("POST /invoke: build response", ("accepted (warmrun/api/routes/invoke.py",)),
    ("GET /runs: read the run", ("warmrun/services/read.py", "warmrun/services/webhook_state")),
    ("FastAPI: body validation/serialisation", ("fastapi/routing.py", "fastapi/dependencies")),
    ("Starlette/uvicorn request handling", ("starlette/", "uvicorn/protocols")),
    ("temporal client (other)", ("temporalio/client",)),
    ("temporal bridge/runtime", ("temporalio/bridge", "temporalio/runtime")),
]


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


IDLE_LEAVES = ("concurrent/futures/thread.py:81)", "Condition.wait (threading.py", "Queue.get")
"""Leaf frames of a thread that waits for work: sampled as busy with --nonblocking."""


def area_of(frames: list[str]) -> str:
    if any(marker in frames[-1] for marker in IDLE_LEAVES):
        return "idle thread waiting for work (sampling artefact)"
    if frames[-1].startswith("Runner.run (asyncio/runners.py"):
        return "event loop itself (uvloop C code: I/O, polling)"
    joined = ";".join(frames)
    for label, markers in AREAS:
        if any(marker in joined for marker in markers):
            return label
    return "other (event loop, asyncio, idle-ish)"


def summarise(path: Path, operations: int, top: int) -> str:
    stacks = load(path)
    total = sum(count for _, count in stacks)
    per_op = 1000 / PY_SPY_RATE_HZ / operations

    areas: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for frames, count in stacks:
        areas[area_of(frames)] += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count

    lines = [
        f"## {path.stem} ({operations} ops, {total} samples = {total * per_op:.1f} busy-ms/op)",
        "",
        "| area | busy ms/op | share |",
        "|---|---:|---:|",
    ]
    for label, count in areas.most_common():
        lines.append(f"| {label} | {count * per_op:.2f} | {100 * count / total:.0f}% |")
    lines += ["", "| hottest functions (inclusive) | ms/op | share |", "|---|---:|---:|"]
    skip = ("<module>", "Runner.run", "run_until_complete", "run_forever", "_run_once")
    shown = 0
    for frame, count in inclusive.most_common():
        if any(word in frame for word in skip) or "typer" in frame or "asyncio_run" in frame:
            continue
        lines.append(f"| `{frame}` | {count * per_op:.2f} | {100 * count / total:.0f}% |")
        shown += 1
        if shown >= top:
            break
    lines += ["", "| self time | ms/op | share |", "|---|---:|---:|"]
    for frame, count in own.most_common(top // 2):
        lines.append(f"| `{frame}` | {count * per_op:.2f} | {100 * count / total:.0f}% |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="bench.json written with --profile")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    report = json.loads(args.report.read_text())
    for profile in report.get("profiles", {}).values():
        path = args.report.parent / profile["file"]
        if path.exists():
            print(summarise(path, profile["operations"], args.top))
            print()


if __name__ == "__main__":
    main()
