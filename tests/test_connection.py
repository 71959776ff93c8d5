"""Connecting to Temporal: the SDK's metrics exporter gets a port nobody else holds."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from warmrun import connection
from warmrun.devserver import free_port


def test_the_sdk_metrics_port_is_chosen_again_when_it_was_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy, spare = taken.getsockname()[1], free_port()
        # The first port handed out is taken by the time the exporter binds it.
        ports: Iterator[int] = iter([busy, spare])
        monkeypatch.setattr(connection, "free_port", lambda host: next(ports))

        runtime, url = connection.runtime_with_prometheus()

    assert runtime is not None
    assert url == f"http://127.0.0.1:{spare}/metrics"
    assert httpx.get(url, timeout=5).status_code == 200
