"""What the bench prints and writes: the comparison table, the targets, the machine.

The terminal table and the markdown one (for BENCHMARKS.md) come from the same rows;
`targets` judges the project's targets (issue 7) on one run's results.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import temporalio
from rich.console import Console
from rich.table import Table

import warmrun
from warmrun.devserver import temporal_binary

from .harness import ROOT
from .stats import ratio

console = Console(width=120)


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
