"""`python -m dev.bench` keeps working: it runs end to end with tiny N and writes its report.

A benchmark is not a test: nothing here judges a number, only that the bench starts
its own dev server and warmrun deployment, measures every phase, cleans up and writes
the JSON that BENCHMARKS.md is built from.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_runs_every_phase_and_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "dev.bench", "--quick", "--scale", "0.5", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=55,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    report = json.loads(out.read_text())
    assert {"machine", "sizes", "results", "targets"} <= report.keys()
    results = report["results"]
    phases = {"accept_c1", "accept_c32", "sync", "status", "e2e", "rss", "accept_api_only"}
    assert phases <= results.keys()
    for accept in (results["accept_c1"], results["accept_c32"]):
        assert {"warmrun", "raw", "raw_eager", "ratio"} <= accept.keys()
        assert {"throughput", "p50_ms", "p99_ms"} <= accept["warmrun"].keys()
    assert {"c1", "c32"} <= results["accept_api_only"].keys()
    assert {"warmrun", "raw_eager", "raw", "ratio"} <= results["sync"].keys()
    assert {"finished", "running", "http_floor"} <= results["status"].keys()
    assert {"warmrun", "raw", "ratio"} <= results["e2e"].keys()
    assert {"before_mb", "after_mb", "growth_mb"} <= results["rss"].keys()
    assert [check["met"] in (True, False) for check in report["targets"]]
