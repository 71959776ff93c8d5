"""Connecting to Temporal with the SDK's own environment configuration."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.envconfig import ClientConfig

DEFAULT_ADDRESS = "localhost:7233"


def connect_config(**overrides: Any) -> dict[str, Any]:
    """`Client.connect` arguments from TEMPORAL_* variables and config-file profiles."""
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    config.setdefault("target_host", DEFAULT_ADDRESS)
    config.setdefault("namespace", "default")
    config.update(overrides)
    return config


async def connect(**overrides: Any) -> Client:
    return await Client.connect(**connect_config(**overrides))
