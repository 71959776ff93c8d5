"""`warmrun dev` and `warmrun serve` as a user runs them: real processes, real ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from warmrun.devserver import DevServer, free_port, stop_process, temporal_binary

WARMRUN = str(Path(sys.executable).parent / "warmrun")


def wait_until_ready(
    url: str,
    process: subprocess.Popen,
    timeout: float = 60,
    headers: dict[str, str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"warmrun exited with {process.returncode}"
        try:
            if httpx.get(f"{url}/ready", headers=headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never became ready")


@contextmanager
def running(
    command: list[str], cwd: Path, env: dict[str, str], pass_fds: tuple[int, ...] = ()
) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=pass_fds,
    )
    try:
        yield process
    finally:
        stop_process(process, timeout=30)


def test_dev_serves_the_bundled_example_with_the_temporal_ui_and_a_nexus_endpoint(
    tmp_path: Path,
) -> None:
    port, temporal_port, ui_port = free_port(), free_port(), free_port()
    command = [
        WARMRUN,
        "dev",
        "--port",
        str(port),
        "--temporal-port",
        str(temporal_port),
        "--ui-port",
        str(ui_port),
        "--data-dir",
        str(tmp_path / ".warmrun"),
    ]
    root = Path(__file__).resolve().parents[1]
    with running(command, cwd=root, env={**os.environ, "TEMPORAL_ADDRESS": ""}) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, process)

        answer = httpx.post(f"{url}/invoke", json={"parameters": {"step_seconds": 0}}, timeout=30)
        assert answer.status_code == 200
        assert answer.json()["success"] is True
        assert answer.json()["metadata"]["pipeline_name"] == "sentiment"
        assert httpx.get(f"http://127.0.0.1:{ui_port}/", timeout=10).status_code == 200
        assert (tmp_path / ".warmrun" / "temporal.sqlite").exists()
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'warmrun_invocations_total{code="200",mode="sync"} 1.0' in metrics
        # The SDK's own series, from its runtime telemetry (no port of their own).
        assert "temporal_workflow_completed_total{" in metrics
        assert process.poll() is None

        # The endpoint `warmrun dev` created: the Nexus example calls the deployment
        # from a namespace of its own, as its docstring says.
        address = f"127.0.0.1:{temporal_port}"
        temporal = [str(temporal_binary()), "--address", address]
        created = [*temporal, "operator", "namespace", "create", "--namespace", "callers"]
        subprocess.run(created, check=True, capture_output=True, timeout=60)
        example = subprocess.run(
            [sys.executable, str(root / "examples" / "nexus_caller.py")],
            env={**os.environ, "TEMPORAL_ADDRESS": address, "TEMPORAL_NAMESPACE": "callers"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert example.returncode == 0, example.stderr
        assert "(succeeded)" in example.stdout
        assert "/namespaces/default/workflows/run_" in example.stdout
    assert process.returncode == 0


def test_dev_restarted_with_edited_code_takes_over_as_a_new_version(tmp_path: Path) -> None:
    pipeline = tmp_path / "edited.py"
    port, temporal_port = free_port(), free_port()
    command = [
        WARMRUN,
        "dev",
        f"{pipeline}:edited",
        "--port",
        str(port),
        "--temporal-port",
        str(temporal_port),
        "--ui-port",
        str(free_port()),
        "--data-dir",
        str(tmp_path / ".warmrun"),
    ]
    url = f"http://127.0.0.1:{port}"
    builds = []
    for version in ("before", "after"):
        pipeline.write_text(f"def edited() -> dict:\n    return {{'code': {version!r}}}\n")
        env = {**os.environ, "TEMPORAL_ADDRESS": ""}
        with running(command, cwd=tmp_path, env=env) as process:
            wait_until_ready(url, process)
            answer = httpx.post(f"{url}/invoke", json={}, timeout=30)
            info = httpx.get(f"{url}/info", timeout=10).json()
        assert answer.json()["outputs"] == {"code": version}, answer.text
        assert info["current"] is True
        builds.append(info["build_id"])
    assert builds[0] != builds[1]


def test_serve_refuses_settings_it_cannot_version_with(tmp_path: Path) -> None:
    pipeline = f"{Path(__file__).parent / 'pipelines.py'}:echo"
    for extra_env, flags, message in (
        ({}, ["--build-id", "has space"], "WARMRUN_BUILD_ID"),
        ({"WARMRUN_DEPLOYMENT": "my.pipeline"}, [], "contains '.'"),
        ({"WARMRUN_VERSIONING": "sometimes"}, [], "WARMRUN_VERSIONING"),
    ):
        result = subprocess.run(
            [WARMRUN, "serve", pipeline, "--port", str(free_port()), *flags],
            env={**os.environ, **extra_env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert message in result.stdout + result.stderr


def test_serve_answers_on_a_listening_socket_it_inherits(
    tmp_path: Path, dev_server: DevServer
) -> None:
    """`--fd`: the process that starts `warmrun serve` binds the port and hands the socket
    over (the ZenML deployer does), so no other process can take the port in between."""
    pipeline = f"{Path(__file__).parent / 'pipelines.py'}:echo"
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        command = [WARMRUN, "serve", pipeline, "--port", str(port), "--fd", str(listener.fileno())]
        env = {**os.environ, "TEMPORAL_ADDRESS": dev_server.address, "WARMRUN_DEPLOYMENT": "on-fd"}
        with running(command, cwd=tmp_path, env=env, pass_fds=(listener.fileno(),)) as process:
            listener.close()  # the port stays bound: the process holds its own copy
            url = f"http://127.0.0.1:{port}"
            wait_until_ready(url, process)
            answer = httpx.post(f"{url}/invoke", json={"parameters": {"text": "hi"}}, timeout=30)
            assert answer.json()["outputs"]["text"] == "hi", answer.text
