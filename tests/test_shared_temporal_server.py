"""The Temporal dev server that deployer-provisioned deployments share (no address set).

The lifecycle through the real `zenml` CLI is in tests/test_zenml_deployer.py; here the
bookkeeping that decides when the server stops, against a real `temporal` dev server.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from warmrun.devserver import free_port
from warmrun.zenml import temporal_server
from warmrun.zenml.deployer import serve_marks
from warmrun.zenml.temporal_server import SharedTemporalServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SharedTemporalServer]:
    shared = SharedTemporalServer(tmp_path, port=free_port(), ui_port=free_port())
    try:
        yield shared
    finally:
        shared.stop()


def test_a_deployment_being_provisioned_keeps_the_server_when_another_is_released(
    server: SharedTemporalServer,
) -> None:
    server.ensure("provisioning")  # found or started; its process is not up yet
    # Meanwhile the last deployment whose process used it is deprovisioned.
    assert server.release("deprovisioned", serve_marks) is False
    assert server.status() is not None
    # The provisioning one fails (or goes away): then nothing uses the server.
    assert server.release("provisioning", serve_marks) is True
    assert server.status() is None


def test_a_reservation_left_by_a_deploy_that_died_expires(
    server: SharedTemporalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(temporal_server, "RESERVATION_SECONDS", 0.0)
    server.ensure("died-while-provisioning")
    assert server.release("deprovisioned", serve_marks) is True
    assert server.status() is None


def test_a_port_taken_between_its_check_and_the_start_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race made certain: the server's last port is held by another process, and
    # the check finds it free, as it would have a moment before that process took it.
    monkeypatch.setattr(temporal_server, "_port_free", lambda port: True)
    monkeypatch.setattr(temporal_server, "PREFERRED_PORT", 0)  # no customary 7233 here
    monkeypatch.setattr(temporal_server, "PREFERRED_UI_PORT", 0)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        last = {"pid": 0, "port": taken, "ui_port": free_port()}
        (tmp_path / "server.json").write_text(json.dumps(last))
        server = SharedTemporalServer(tmp_path)
        try:
            state = server.ensure("deploying")
            assert state.port != taken
            assert server.status() is not None
        finally:
            server.stop()
