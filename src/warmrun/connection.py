"""Connecting to Temporal with the SDK's own environment configuration."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RetryConfig

from warmrun.devserver import free_port

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


def runtime_with_prometheus(host: str = "127.0.0.1", attempts: int = 5) -> tuple[Runtime, str]:
    """A Temporal runtime exporting the SDK's metrics on a free loopback port.

    The SDK's exporter cannot report which port it bound, so the port is chosen
    first; when something else takes it in between, the exporter refuses to start
    and another port is tried, so the race cannot leave the process without metrics.
    """
    for _ in range(attempts):
        port = free_port(host)
        telemetry = TelemetryConfig(metrics=PrometheusConfig(bind_address=f"{host}:{port}"))
        try:
            runtime = Runtime(telemetry=telemetry)
        except ValueError as err:
            if "in use" not in str(err):
                raise
            continue
        return runtime, f"http://{host}:{port}/metrics"
    raise RuntimeError(f"no free port for the SDK's metrics on {host} after {attempts} tries")
