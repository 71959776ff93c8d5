"""warmrun against raw Temporal, in one run, against one dev server (issue 7).

    .venv/bin/python -m dev.bench [--quick] [--phases ...] [--out dev/results/bench.json]

The command line: start the dev server, warmrun and the raw worker (`harness`), run
the chosen phases (`phases`), write the JSON report and its markdown tables and print
the table (`report`). The package docstring (`dev/bench/__init__.py`) says what is
measured and why.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop
from temporalio.client import Client

from warmrun.devserver import free_port, stop_process

from .harness import (
    CLIENTS_CPU,
    DEV,
    SERVER_CPU,
    BenchServer,
    Profiler,
    cache_bytecode,
    raw_worker,
    rss_mb,
    start_warmrun,
    wait_http_ready,
)
from .load import Callers
from .phases import Bench, Sizes, accept_api_only
from .report import console, machine, markdown, print_table, targets

PHASES = ("accept", "sync", "status", "e2e", "rss", "api")
"""The `--phases` names, in the order they run."""


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
    warm_process: subprocess.Popen[bytes] | None = None
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
                if unknown := phases - set(PHASES):
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
    parser = argparse.ArgumentParser(
        prog="python -m dev.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small N everywhere (smoke test)")
    parser.add_argument(
        "--out", type=Path, default=DEV / "results" / "bench.json", help="JSON report file"
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every N (after --quick) by this"
    )
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated subset of {','.join(PHASES)}",
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
