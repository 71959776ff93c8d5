"""Connecting to Temporal with the SDK's own environment configuration."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.service import RetryConfig

DEFAULT_ADDRESS = "localhost:7233"
RETRY = RetryConfig(max_elapsed_time_millis=3000, max_interval_millis=1000)
"""While Temporal is unreachable, give up on a call after ~3 s so the API answers 503
promptly instead of hanging (the SDK's default retries for 10 s)."""


def connect_config(**overrides: Any) -> dict[str, Any]:
    """`Client.connect` arguments from TEMPORAL_* variables and config-file profiles."""
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    config.setdefault("target_host", DEFAULT_ADDRESS)
    config.setdefault("namespace", "default")
    config.setdefault("retry_config", RETRY)
    config.update(overrides)
    return config


async def connect(**overrides: Any) -> Client:
    return await Client.connect(**connect_config(**overrides))
