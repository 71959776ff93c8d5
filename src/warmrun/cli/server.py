"""`warmrun serve` and `warmrun dev`: the server side of the command line."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from warmrun.api import create_app
from warmrun.connection import connect
from warmrun.devserver import DevServer
from warmrun.nexus import ensure_nexus_endpoint
from warmrun.pipeline import Pipeline, PipelineLoadError, load_pipeline
from warmrun.server import serve_app
from warmrun.settings import Settings
from warmrun.versioning import VersioningError, replica_version
from warmrun.webhooks import new_secret
from warmrun.worker import running_worker

console = Console(stderr=True)

EXAMPLE_FILE = "sentiment.py"
EXAMPLE_PIPELINE = "sentiment"


def bundled_example() -> str:
    """The example pipeline shipped in the repository's `examples/` folder."""
    candidates = [
        Path.cwd() / "examples" / EXAMPLE_FILE,
        Path(__file__).resolve().parents[3] / "examples" / EXAMPLE_FILE,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return f"{candidate}:{EXAMPLE_PIPELINE}"
    raise typer.BadParameter("no pipeline given and the bundled example was not found")


PipelineArg = Annotated[str, typer.Argument(help="module:function or path/to/file.py:function")]
HostOpt = Annotated[str, typer.Option(help="Interface the HTTP API binds to.")]
PortOpt = Annotated[int, typer.Option(help="Port of the HTTP API.")]
DeploymentOpt = Annotated[
    str | None,
    typer.Option(help="Deployment name (task queue warmrun-<name>) [WARMRUN_DEPLOYMENT]."),
]
ConcurrencyOpt = Annotated[
    int | None, typer.Option(help="Runs executing at once here [WARMRUN_MAX_CONCURRENT_RUNS].")
]
HeartbeatOpt = Annotated[
    float | None,
    typer.Option(
        help="Seconds before a silent run's worker counts as lost [WARMRUN_HEARTBEAT_TIMEOUT]."
    ),
]
BuildIdOpt = Annotated[
    str | None,
    typer.Option(
        help="This replica's version of the deployment; default: a hash of the pipeline's "
        "source file [WARMRUN_BUILD_ID]."
    ),
]
PromoteOpt = Annotated[
    bool,
    typer.Option(
        "--promote",
        help="Make this version current once its worker polls: new runs execute on it "
        "[WARMRUN_PROMOTE].",
    ),
]
LogLevelOpt = Annotated[str, typer.Option(help="Log level.")]


def _settings(**flags: Any) -> Settings:
    """Environment settings, overridden by the flags that were given."""
    try:
        return Settings(**{name: value for name, value in flags.items() if value is not None})
    except ValidationError as err:
        for error in err.errors():
            name = "_".join(str(part) for part in error["loc"])
            console.print(f"[red]error:[/red] WARMRUN_{name.upper()}: {error['msg']}")
        raise typer.Exit(2) from None


def _load(reference: str) -> Pipeline:
    try:
        return load_pipeline(reference)
    except PipelineLoadError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _dev_webhook_secret(data_dir: Path) -> str:
    """A webhook secret kept under the dev data folder, so it survives restarts."""
    path = data_dir / "webhook_secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(new_secret())
        path.chmod(0o600)
    return path.read_text().strip()


def _exit_after_graceful_shutdown(signum: int, frame: object) -> None:
    """uvicorn shuts down gracefully on SIGTERM, then re-raises the signal: end the
    process with a clean exit (running `finally` blocks) instead of dying of it."""
    raise SystemExit(0)


def _serve(
    pipeline: Pipeline,
    settings: Settings,
    host: str,
    port: int,
    log_level: str,
    fd: int | None = None,
) -> None:
    try:
        version = replica_version(pipeline, settings)
    except VersioningError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    console.print(
        f"deployment [bold]{settings.deployment_name(pipeline.name)}[/bold] · build "
        f"[bold]{version.build_id}[/bold] · versioning {version.versioning}"
    )
    signal.signal(signal.SIGTERM, _exit_after_graceful_shutdown)
    settings = settings.with_defaults(pipeline.settings_defaults())
    if not settings.run_api:
        asyncio.run(_work_only(pipeline, settings))
        return
    app = create_app(pipeline, settings)
    serve_app(app, settings, host=host, port=port, log_level=log_level, fd=fd)


async def _work_only(pipeline: Pipeline, settings: Settings) -> None:
    """Execute runs without serving HTTP, until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    client = await connect()
    async with running_worker(client, pipeline, settings):
        await stop.wait()


def serve(
    pipeline: PipelineArg,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    deployment: DeploymentOpt = None,
    max_concurrent_runs: ConcurrencyOpt = None,
    heartbeat_timeout: HeartbeatOpt = None,
    build_id: BuildIdOpt = None,
    promote: PromoteOpt = False,
    worker: Annotated[bool, typer.Option(help="Execute runs in this process.")] = True,
    api: Annotated[bool, typer.Option(help="Serve the HTTP API from this process.")] = True,
    log_level: LogLevelOpt = "info",
    fd: Annotated[
        int | None,
        typer.Option(
            help="Serve on this inherited listening socket; --host and --port then only "
            "name it (the ZenML deployer binds the port and passes the socket)."
        ),
    ] = None,
) -> None:
    """Serve PIPELINE: HTTP API and Temporal worker in one warm process.

    The Temporal connection comes from TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, … (the
    SDK's environment configuration); start any number of replicas on one deployment.
    Each is a version (build id) of the deployment: with --promote, new runs go to
    this one, while runs in flight finish on the version that started them.
    """
    _configure_logging(log_level)
    if not worker and not api:
        raise typer.BadParameter("--no-worker and --no-api together leave nothing to run")
    settings = _settings(
        deployment=deployment,
        max_concurrent_runs=max_concurrent_runs,
        heartbeat_timeout=heartbeat_timeout,
        build_id=build_id,
        promote=promote or None,
        run_worker=worker,
        run_api=api,
    )
    _serve(_load(pipeline), settings, host, port, log_level, fd)


async def _dev_nexus_endpoint(deployment: str) -> str:
    """Make the dev deployment callable over Nexus from any namespace at once."""
    try:
        return await ensure_nexus_endpoint(await connect(), deployment)
    except ValueError as err:  # a deployment name no endpoint name can carry
        return f"none ({err})"


def dev(
    pipeline: Annotated[
        str | None, typer.Argument(help="Pipeline to serve; default: the bundled example.")
    ] = None,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    temporal_port: Annotated[int, typer.Option(help="gRPC port of the dev server.")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Port of the Temporal UI.")] = 8233,
    data_dir: Annotated[
        Path, typer.Option(help="Where the dev server keeps its SQLite file.")
    ] = Path(".warmrun"),
    log_level: LogLevelOpt = "info",
) -> None:
    """Start an embedded Temporal dev server (UI included) and serve PIPELINE on it."""
    _configure_logging(log_level)
    loaded = _load(pipeline or bundled_example())
    server = DevServer(
        host="127.0.0.1", port=temporal_port, ui_port=ui_port, db_file=data_dir / "temporal.sqlite"
    )
    server.start()
    try:
        asyncio.run(server.wait_ready())
        os.environ["TEMPORAL_ADDRESS"] = server.address
        secret = os.environ.get("WARMRUN_WEBHOOK_SECRET") or _dev_webhook_secret(data_dir)
        # Each restart with edited code is a new version: it takes over at once.
        settings = _settings(temporal_ui_url=server.ui_url, webhook_secret=secret, promote=True)
        console.print(
            f"[bold green]warmrun dev[/bold green] · pipeline [bold]{loaded.name}[/bold]\n"
            f"  API          http://{host}:{port}  (docs: http://{host}:{port}/docs)\n"
            f"  Temporal UI  {server.ui_url}\n"
            f"  Temporal     {server.address}  (SQLite: {server.db_file})\n"
            f"  webhooks     signed with {secret.split(',')[0]}\n"
            f"  try: curl -s -X POST http://{host}:{port}/invoke "
            "-H 'Content-Type: application/json' -H 'Prefer: respond-async' "
            "-d '{\"parameters\": {}}'"
        )
        endpoint = asyncio.run(_dev_nexus_endpoint(settings.deployment_name(loaded.name)))
        console.print(f"  Nexus        endpoint {endpoint} (service warmrun: run, get)")
        _serve(loaded, settings, host, port, log_level)
    finally:
        server.stop()
