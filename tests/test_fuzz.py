"""schemathesis against the app's own OpenAPI spec: no 5xx, no undocumented status.

The deployment is a real `warmrun serve` process on the session's dev server, so the
fuzzer's requests go over real HTTP and start real runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_cli import running, wait_until_ready
from warmrun.devserver import DevServer, free_port

WARMRUN = str(Path(sys.executable).parent / "warmrun")
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
TESTS = Path(__file__).parent
PIPELINE = f"{TESTS / 'pipelines.py'}:echo"
FUZZ_SECONDS = 40
TOKEN = "fuzz-token"
AUTHORIZED = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def fuzzed_deployment(
    dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": dev_server.address,
        "WARMRUN_DEPLOYMENT": "fuzz",
        "WARMRUN_HEARTBEAT_TIMEOUT": "3",
        "WARMRUN_MAX_TIMEOUT": "30",
        "WARMRUN_MAX_PENDING_RUNS": "100000",
        "WARMRUN_AUTH_TOKEN": TOKEN,
    }
    command = [WARMRUN, "serve", PIPELINE, "--port", str(port), "--log-level", "warning"]
    with running(command, cwd=tmp_path_factory.mktemp("fuzz"), env=env) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, process, headers=AUTHORIZED)
        yield url


def test_schemathesis_with_all_checks_finds_nothing(fuzzed_deployment: str, tmp_path: Path) -> None:
    """`schemathesis run --checks all` over the live spec, auth on, as an outsider
    would probe the deployment: examples, coverage, fuzzing and stateful phases within
    `FUZZ_SECONDS`. No 5xx, no undocumented status, no schema violation, no route that
    ignores auth; the hooks (tests/schemathesis_hooks.py) let through only the
    documented answers the heuristics misread."""
    command = [
        SCHEMATHESIS,
        "run",
        f"{fuzzed_deployment}/openapi.json",
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--max-time",
        str(FUZZ_SECONDS),
        "--request-timeout",
        "20",
        "--max-failures",
        "20",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
        "NO_COLOR": "1",
    }
    result = subprocess.run(
        command,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=FUZZ_SECONDS + 60,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-20_000:] + result.stderr[-5_000:]
    assert "API Operations:" in result.stdout
