"""Running a deployment's app under uvicorn, with a graceful drain on SIGTERM.

uvicorn alone closes its listening socket at once on SIGTERM. A deployment should
instead keep answering while it drains: new invocations get `503` + `Retry-After`
(so a load balancer or client goes to another replica), `/ready` turns false, reads
and cancels still work, and in-flight runs get `WARMRUN_SHUTDOWN_GRACE` seconds to
finish. Runs still executing after that are handed back to Temporal (their activity
fails as "worker shutdown" and is retried on another replica, resuming after the
last checkpointed step). A second signal ends the process at once (exit code 1); its
runs resume elsewhere after the heartbeat timeout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI

from warmrun.deployment import Deployment
from warmrun.http_limits import ConnectionLimits, limited_protocol
from warmrun.settings import Settings

logger = logging.getLogger(__name__)

KEEP_ALIVE_SECONDS = 75
FILES_BESIDES_CONNECTIONS = 256


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app
        self._draining: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        deployment: Deployment | None = getattr(self._app.state, "deployment", None)
        if self._draining is not None:
            # Stop now, without waiting for the pipelines: Temporal retries their runs on
            # another replica once their heartbeat times out.
            logger.warning("%s again: exiting at once", signal.Signals(sig).name)
            os._exit(1)
        if deployment is None or not self.started:
            super().handle_exit(sig, frame)
            return
        logger.info("%s: draining (send it again to stop at once)", signal.Signals(sig).name)
        self._draining = asyncio.get_running_loop().create_task(self._drain(deployment))

    async def _drain(self, deployment: Deployment) -> None:
        try:
            await deployment.drain()
        finally:
            self.should_exit = True


def serve_app(
    app: FastAPI,
    settings: Settings,
    *,
    host: str,
    port: int,
    log_level: str,
    fd: int | None = None,
) -> None:
    """Serve on `host:port`, or on the listening socket inherited as `fd` (bound by the
    process that started this one, so no other can take its port in between)."""
    limits = ConnectionLimits.from_settings(settings)
    _ensure_file_limit(limits.max_connections)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        # uvicorn's httptools protocol plus deadlines for slow clients, a head size limit
        # and a connection cap (see warmrun.http_limits).
        http=limited_protocol(limits),
        # Longer than the idle timeout of common load balancers (60 s), so that the server
        # never closes a kept-alive connection just as a client reuses it.
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        # Sync invocations still waiting when the drain ends are cut after this; their
        # runs go on (the client can read them by the X-Run-Id it already has).
        timeout_graceful_shutdown=max(int(settings.shutdown_grace), 1),
    )
    DrainingServer(config, app).run(sockets=None if fd is None else [socket.socket(fileno=fd)])


def _ensure_file_limit(max_connections: int) -> None:
    """Each connection is a file descriptor: raise the soft limit to fit
    `WARMRUN_MAX_CONNECTIONS` (and the Temporal client, threads and files besides),
    so that the cap refuses clearly before `accept()` starts failing."""
    if sys.platform == "win32":
        return
    import resource

    needed = max_connections + FILES_BESIDES_CONNECTIONS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    if raised < needed:
        logger.warning(
            "open files are limited to %d (ulimit -n), too few for WARMRUN_MAX_CONNECTIONS=%d: "
            "connections beyond about %d will fail without a clear answer",
            raised,
            max_connections,
            raised - FILES_BESIDES_CONNECTIONS,
        )
