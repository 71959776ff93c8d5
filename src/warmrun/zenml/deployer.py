"""warmrun as a ZenML deployer flavor: `zenml pipeline deploy` provisions a warmrun
deployment, whose runs are durable Temporal workflows.

    zenml deployer flavor register warmrun.zenml.WarmrunDeployerFlavor
    zenml deployer register temporal --flavor=warmrun
    zenml stack register tstack -o default -a default -D temporal --set
    zenml pipeline deploy my_pipelines.training_pipeline -n trainer

The lifecycle is that of ZenML's local deployer (`zenml/deployers/local/`): a detached
`warmrun serve zenml:<deployment id>` process per deployment, its pid, port and log
file in the deployment's metadata, its runtime directory under ZenML's global config
directory. Unlike the local deployer, the port is bound here and its listening socket
handed to the process (nothing can take the port in between), provisioning waits for
the process to be ready (`/ready`: Temporal reachable, worker polling) and fails at
once, with the log's tail, when it dies or Temporal cannot be reached; a recorded pid
counts only while its command line is still ours.

Runs live on Temporal, not in the process: re-deploying stops the old process (it
drains for `shutdown_grace`) and starts the new one on the same task queue, where runs
in flight resume. With no Temporal address configured, deployments share a dev server
started on first use (`warmrun.zenml.temporal_server`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, cast
from uuid import UUID

import httpx
from pydantic import BaseModel, PositiveFloat, PositiveInt
from temporalio.envconfig import ClientConfig
from zenml.config.base_settings import BaseSettings
from zenml.deployers.base_deployer import (
    BaseDeployer,
    BaseDeployerConfig,
    BaseDeployerFlavor,
    BaseDeployerSettings,
)
from zenml.deployers.exceptions import (
    DeployerError,
    DeploymentLogsNotFoundError,
    DeploymentProvisionError,
)
from zenml.enums import DeploymentStatus
from zenml.models import DeploymentOperationalState, DeploymentResponse
from zenml.utils.io_utils import get_global_config_directory

from warmrun.connection import RETRY
from warmrun.run import task_queue_for
from warmrun.settings import Settings
from warmrun.zenml import daemon
from warmrun.zenml.temporal_server import SharedTemporalServer, TemporalServerError, temporal_error

if TYPE_CHECKING:
    from zenml.stack import Stack

TEMPORAL_CHECK_TIMEOUT = 5.0
"""Seconds a deploy waits for Temporal to answer before failing."""
STOP_MARGIN = 10.0
"""Seconds beyond twice the drain grace (the worker's, then the HTTP server's) that a
stopped process gets before it is killed."""
LISTEN_BACKLOG = 2048
"""uvicorn's default backlog, for the socket the deployer binds for the process."""
LOG_TAIL_LINES = 25
FOLLOW_TAIL_LINES = 100
FOLLOW_POLL = 0.2

WARMRUN_SETTINGS = (
    "max_concurrent_runs",
    "max_pending_runs",
    "heartbeat_timeout",
    "shutdown_grace",
    "default_timeout",
    "max_timeout",
)
"""Deployer settings passed to the process as `WARMRUN_<NAME>` when set."""


class WarmrunDeployerSettings(BaseDeployerSettings):
    """Per-deployment settings (`settings: deployer: ...` in a pipeline's config), with
    the component's config as defaults. Unset warmrun settings keep warmrun's defaults
    (README, "Configuration"; a ZenML pipeline runs 4 runs at once per process)."""

    host: str = "127.0.0.1"
    """Interface the deployment's HTTP API binds to."""
    port: PositiveInt | None = None
    """Preferred port; default: the deployment's previous port, else a free one."""
    allocate_port_if_busy: bool = True
    """With a `port` that is busy: take a free one (True) or fail the deploy (False)."""
    port_range: tuple[int, int] = (8000, 65535)
    max_concurrent_runs: PositiveInt | None = None
    max_pending_runs: PositiveInt | None = None
    heartbeat_timeout: PositiveFloat | None = None
    shutdown_grace: float | None = None
    """Seconds in-flight runs get to finish when the process is stopped (re-deploy,
    deprovision); runs still executing then resume on the next process."""
    default_timeout: PositiveFloat | None = None
    max_timeout: PositiveFloat | None = None
    startup_timeout: PositiveFloat = 120.0
    """Seconds a deploy waits for the process to be ready before failing."""
    log_level: str = "info"


class WarmrunDeployerConfig(BaseDeployerConfig, WarmrunDeployerSettings):
    """The stack component: how its deployments reach Temporal.

    No `temporal_address` and no `temporal_profile`: the deployments share a Temporal
    dev server on this machine (started on first use). Otherwise the SDK's environment
    configuration applies as for `warmrun serve`: `temporal_profile` names a profile of
    the Temporal config file (address, namespace, API key, TLS), and the environment of
    the `zenml` command (TEMPORAL_*) is passed on."""

    temporal_address: str | None = None
    temporal_namespace: str | None = None
    temporal_profile: str | None = None
    temporal_ui_url: str | None = None
    """Base URL of the Temporal UI for the runs' links (the dev server's is known)."""
    embedded_temporal_port: PositiveInt | None = None
    """Port of the shared dev server; default: its last one, else 7233, else a free one."""
    embedded_temporal_ui_port: PositiveInt | None = None

    @property
    def embedded_temporal(self) -> bool:
        return not self.temporal_address and not self.temporal_profile

    @property
    def is_local(self) -> bool:
        return True


class WarmrunDeploymentMetadata(BaseModel):
    """What `zenml deployment describe -m` shows, and what the deployer finds its
    process by."""

    pid: int | None = None
    host: str | None = None
    port: int | None = None
    log_file: str | None = None
    runtime_dir: str | None = None
    task_queue: str | None = None
    temporal_address: str | None = None
    temporal_namespace: str | None = None
    temporal_ui_url: str | None = None
    embedded_temporal: bool = False

    @classmethod
    def of(cls, deployment: DeploymentResponse) -> WarmrunDeploymentMetadata:
        return cls.model_validate(deployment.deployment_metadata or {})

    @property
    def url(self) -> str | None:
        if not self.host or not self.port:
            return None
        host = "localhost" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


def serve_marks(deployment_id: UUID | str) -> list[str]:
    """The command line arguments that make a process this deployment's server."""
    return ["serve", f"zenml:{deployment_id}"]


class WarmrunDeployer(BaseDeployer):
    """Deploys a pipeline snapshot as a `warmrun serve` process on this machine."""

    @property
    def settings_class(self) -> type[BaseSettings] | None:
        return WarmrunDeployerSettings

    @property
    def config(self) -> WarmrunDeployerConfig:
        return cast(WarmrunDeployerConfig, self._config)

    def do_provision_deployment(
        self,
        deployment: DeploymentResponse,
        stack: Stack,
        environment: dict[str, str],
        secrets: dict[str, str],
        timeout: int,
    ) -> DeploymentOperationalState:
        assert deployment.snapshot is not None, "a deployment has a snapshot"
        settings = cast(WarmrunDeployerSettings, self.get_settings(deployment.snapshot))
        previous = WarmrunDeploymentMetadata.of(deployment)
        metadata = WarmrunDeploymentMetadata(
            host=settings.host,
            task_queue=task_queue_for(deployment.name),
            embedded_temporal=self.config.embedded_temporal,
        )
        env = _inherited_env(self.config)
        env.update(environment)
        env.update(secrets)
        # Before the old process stops: a deploy that cannot reach Temporal leaves it be.
        env.update(self._temporal_env(deployment, metadata))
        try:
            return self._replace_process(deployment, settings, previous, metadata, env)
        except DeploymentProvisionError:
            self._release_temporal(deployment, metadata)
            raise

    def _replace_process(
        self,
        deployment: DeploymentResponse,
        settings: WarmrunDeployerSettings,
        previous: WarmrunDeploymentMetadata,
        metadata: WarmrunDeploymentMetadata,
        env: dict[str, str],
    ) -> DeploymentOperationalState:
        # Runs in flight live on Temporal: those the old process does not finish while
        # it drains resume on the new one.
        daemon.stop(previous.pid, serve_marks(deployment.id), _stop_timeout(settings))
        env.update(_warmrun_env(deployment, settings))
        env["WARMRUN_DEPLOYMENT"] = deployment.name
        if metadata.temporal_ui_url:
            env["WARMRUN_TEMPORAL_UI_URL"] = metadata.temporal_ui_url
        runtime_dir = _runtime_dir(deployment.id)
        log_file = runtime_dir / "warmrun.log"
        metadata.runtime_dir, metadata.log_file = str(runtime_dir), str(log_file)
        with _listening_socket(settings, previous) as listener:  # the process has its own copy
            metadata.port = listener.getsockname()[1]
            command = [
                sys.executable,
                "-m",
                "warmrun",
                *serve_marks(deployment.id),
                "--host",
                settings.host,
                "--port",
                str(metadata.port),
                "--fd",
                str(listener.fileno()),
                "--log-level",
                settings.log_level,
            ]
            try:
                process = daemon.start(
                    command,
                    env=env,
                    log_file=log_file,
                    cwd=Path.cwd(),
                    pass_fds=[listener.fileno()],
                )
            except OSError as err:
                raise DeploymentProvisionError(f"cannot start `warmrun serve`: {err}") from err
        metadata.pid = process.pid
        state = DeploymentOperationalState(
            status=DeploymentStatus.RUNNING,
            url=metadata.url,
            metadata=metadata.model_dump(exclude_none=True),
        )
        try:
            _wait_ready(process, metadata, deployment.auth_key, settings.startup_timeout)
        except DeploymentProvisionError:
            daemon.stop(process.pid, serve_marks(deployment.id))
            # Keep the log file and where it is, for `zenml deployment logs`.
            state.status = DeploymentStatus.ERROR
            self._update_deployment(deployment, state)
            raise
        if metadata.embedded_temporal:
            self._shared_temporal().add_user(str(deployment.id), process.pid)
        return state

    def do_get_deployment_state(self, deployment: DeploymentResponse) -> DeploymentOperationalState:
        metadata = WarmrunDeploymentMetadata.of(deployment)
        state = DeploymentOperationalState(
            status=DeploymentStatus.ERROR, metadata=metadata.model_dump(exclude_none=True)
        )
        if not metadata.pid:
            state.status = DeploymentStatus.ABSENT
        elif daemon.is_ours(metadata.pid, serve_marks(deployment.id)) and metadata.url:
            state.status = DeploymentStatus.RUNNING  # ZenML then checks `/health`
            state.url = metadata.url
        return state

    def do_get_deployment_state_logs(
        self, deployment: DeploymentResponse, follow: bool = False, tail: int | None = None
    ) -> Generator[str, bool, None]:
        metadata = WarmrunDeploymentMetadata.of(deployment)
        if not metadata.log_file or not os.path.exists(metadata.log_file):
            raise DeploymentLogsNotFoundError(
                f"no log file for deployment {deployment.name!r} (it is not provisioned)"
            )
        return _read_log(Path(metadata.log_file), follow=follow, tail=tail)

    def do_deprovision_deployment(
        self, deployment: DeploymentResponse, timeout: int
    ) -> DeploymentOperationalState | None:
        metadata = WarmrunDeploymentMetadata.of(deployment)
        settings = (
            cast(WarmrunDeployerSettings, self.get_settings(deployment.snapshot))
            if deployment.snapshot is not None
            else self.config
        )
        try:
            daemon.stop(metadata.pid, serve_marks(deployment.id), _stop_timeout(settings))
        except Exception as err:
            raise DeployerError(f"cannot stop the warmrun process {metadata.pid}: {err}") from err
        shutil.rmtree(_runtime_dir(deployment.id), ignore_errors=True)
        self._release_temporal(deployment, metadata)
        return None  # ABSENT at once

    def _temporal_env(
        self, deployment: DeploymentResponse, metadata: WarmrunDeploymentMetadata
    ) -> dict[str, str]:
        """Where the process finds Temporal; checked to answer now, so that a deploy
        against an unreachable Temporal fails with that reason."""
        config = self.config
        env: dict[str, str] = {}
        if config.embedded_temporal:
            try:
                server = self._shared_temporal().ensure(str(deployment.id))
            except TemporalServerError as err:
                raise DeploymentProvisionError(str(err)) from None
            env["TEMPORAL_ADDRESS"] = metadata.temporal_address = server.address
            env["TEMPORAL_NAMESPACE"] = metadata.temporal_namespace = server.namespace
            metadata.temporal_ui_url = config.temporal_ui_url or server.ui_url
            return env
        if config.temporal_profile:
            env["TEMPORAL_PROFILE"] = config.temporal_profile
        if config.temporal_address:
            env["TEMPORAL_ADDRESS"] = config.temporal_address
        if config.temporal_namespace:
            env["TEMPORAL_NAMESPACE"] = config.temporal_namespace
        try:
            connect = dict(
                ClientConfig.load_client_connect_config(override_env_vars={**os.environ, **env})
            )
        except Exception as err:  # a missing profile or a malformed config file
            raise DeploymentProvisionError(
                f"cannot read the Temporal connection of deployer {self.name!r}: {err}"
            ) from None
        connect.setdefault("target_host", "localhost:7233")
        connect.setdefault("namespace", "default")
        metadata.temporal_address = connect["target_host"]
        metadata.temporal_namespace = connect["namespace"]
        metadata.temporal_ui_url = config.temporal_ui_url
        error = temporal_error({**connect, "retry_config": RETRY}, TEMPORAL_CHECK_TIMEOUT)
        if error is not None:
            raise DeploymentProvisionError(
                f"Temporal at {metadata.temporal_address} (namespace "
                f"{metadata.temporal_namespace}) is unreachable: {error}. Start it, or fix "
                f"the connection: `zenml deployer update {self.name} --temporal_address=...` "
                "(or --temporal_profile=...)"
            )
        return env

    def _shared_temporal(self) -> SharedTemporalServer:
        return SharedTemporalServer(
            Path(get_global_config_directory()) / "warmrun" / "temporal",
            port=self.config.embedded_temporal_port,
            ui_port=self.config.embedded_temporal_ui_port,
        )

    def _release_temporal(
        self, deployment: DeploymentResponse, metadata: WarmrunDeploymentMetadata
    ) -> None:
        """The shared dev server stops with the last deployment using it."""
        if metadata.embedded_temporal:
            self._shared_temporal().release(str(deployment.id), serve_marks)


def _runtime_dir(deployment_id: UUID) -> Path:
    return Path(get_global_config_directory()) / "warmrun" / "deployments" / str(deployment_id)


def _stop_timeout(settings: WarmrunDeployerSettings) -> float:
    grace = settings.shutdown_grace
    if grace is None:
        grace = Settings.model_fields["shutdown_grace"].default
    return 2 * grace + STOP_MARGIN


def _listening_socket(
    settings: WarmrunDeployerSettings, previous: WarmrunDeploymentMetadata
) -> socket.socket:
    """The deployment's HTTP socket, bound and listening here and handed to `warmrun
    serve` (`--fd`): a port found free here and bound later by the process could be
    taken in between. The configured port, else the previous one (a re-deploy keeps
    its URL), else the first free one of `port_range`; a busy configured port fails
    unless `allocate_port_if_busy`."""
    preferred = [settings.port] if settings.port else [p for p in (previous.port,) if p]
    for port in preferred:
        if listener := _listen(settings.host, port):
            return listener
    if preferred and not settings.allocate_port_if_busy:
        raise DeploymentProvisionError(
            f"TCP port {preferred} is not available. Free it, choose another `port` or set "
            "`allocate_port_if_busy: true` in the deployer's settings."
        )
    start, stop = settings.port_range
    for port in range(start, stop + 1):
        if listener := _listen(settings.host, port):
            return listener
    raise DeploymentProvisionError(
        f"No free TCP port in the range {settings.port_range}: free one or widen `port_range` "
        "in the deployer's settings."
    )


def _listen(host: str, port: int) -> socket.socket | None:
    """A socket listening on `host:port`, or None when the port is taken: binding is
    the check (as uvicorn binds: SO_REUSEADDR, its backlog)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(LISTEN_BACKLOG)
    except OSError:
        listener.close()
        return None
    return listener


def _inherited_env(config: WarmrunDeployerConfig) -> dict[str, str]:
    """The `zenml` command's environment, without what the deployer decides: the
    Temporal connection of the shell when the deployer uses its dev server, and a
    token ZenML's callers would not know."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not (config.embedded_temporal and key.startswith("TEMPORAL_"))
    }
    env.pop("WARMRUN_AUTH_TOKEN", None)
    env["PYTHONUNBUFFERED"] = "1"  # the log is read while the process runs
    return env


def _warmrun_env(
    deployment: DeploymentResponse, settings: WarmrunDeployerSettings
) -> dict[str, str]:
    env = {
        f"WARMRUN_{name.upper()}": str(value)
        for name in WARMRUN_SETTINGS
        if (value := getattr(settings, name)) is not None
    }
    if deployment.auth_key:  # ZenML's key is what its clients send as a bearer token
        env["WARMRUN_AUTH_TOKEN"] = deployment.auth_key
    return env


def _wait_ready(
    process: subprocess.Popen[bytes],
    metadata: WarmrunDeploymentMetadata,
    auth_key: str | None,
    timeout: float,
) -> None:
    """Until `/ready` answers 200 (Temporal reachable, worker polling); a process that
    exits or never gets ready fails the deploy with its log's tail."""
    assert metadata.url and metadata.log_file
    log_file = Path(metadata.log_file)
    headers = {"Authorization": f"Bearer {auth_key}"} if auth_key else {}
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(base_url=metadata.url, headers=headers, timeout=3.0) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise DeploymentProvisionError(
                    f"the warmrun process exited with code {process.returncode} at start "
                    f"(log {log_file}):\n{daemon.tail(log_file, LOG_TAIL_LINES)}"
                )
            try:
                answer = http.get("/ready")
                if answer.status_code == 200:
                    return
                last = f"/ready answered {answer.status_code}: {answer.text[:300]}"
            except httpx.HTTPError as err:
                last = f"{type(err).__name__}: {err}"
            time.sleep(0.2)
    raise DeploymentProvisionError(
        f"the warmrun process was not ready within {timeout:.0f} s ({last}; log "
        f"{log_file}):\n{daemon.tail(log_file, LOG_TAIL_LINES)}"
    )


def _read_log(path: Path, *, follow: bool, tail: int | None) -> Generator[str, bool, None]:
    with path.open(encoding="utf-8", errors="replace") as log:
        lines = log.readlines()
        if tail is None and follow:
            tail = FOLLOW_TAIL_LINES
        for line in lines[-tail:] if tail else lines:
            yield line.rstrip("\n")
        while follow:
            where = log.tell()
            line = log.readline()
            if line.endswith("\n"):
                yield line.rstrip("\n")
            else:  # nothing new, or a line still being written
                log.seek(where)
                time.sleep(FOLLOW_POLL)


class WarmrunDeployerFlavor(BaseDeployerFlavor):
    """`zenml deployer flavor register warmrun.zenml.WarmrunDeployerFlavor`."""

    @property
    def name(self) -> str:
        return "warmrun"

    @property
    def docs_url(self) -> str | None:
        return None

    @property
    def sdk_docs_url(self) -> str | None:
        return None

    @property
    def logo_url(self) -> str:
        return ""

    @property
    def config_class(self) -> type[BaseDeployerConfig]:
        return WarmrunDeployerConfig

    @property
    def implementation_class(self) -> type[WarmrunDeployer]:
        return WarmrunDeployer
