"""Deployment settings, from `WARMRUN_*` environment variables (SPEC §5).

The Temporal connection is not configured here: it comes from the SDK's own
environment configuration (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, profiles, TLS,
API keys), so the dev server, a self-hosted cluster and Temporal Cloud work unchanged.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field, PositiveFloat, PositiveInt
from pydantic_settings import BaseSettings, SettingsConfigDict

from warmrun.run import RunPolicy


class Versioning(StrEnum):
    """`WARMRUN_VERSIONING`: how runs follow the deployment's versions (`warmrun.versioning`)."""

    PINNED = "pinned"
    AUTO_UPGRADE = "auto-upgrade"
    OFF = "off"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WARMRUN_", extra="ignore")

    deployment: str | None = Field(
        None,
        description="Deployment name (task queue `warmrun-<name>`); default: the pipeline's name.",
    )
    max_concurrent_runs: PositiveInt = Field(
        8, description="Runs executing at once in one process; more wait as `queued`."
    )
    max_pending_runs: PositiveInt = Field(
        1000,
        description="Queued + running runs of the deployment (all replicas) before 429.",
    )
    default_timeout: PositiveFloat = Field(3600.0, description="Run budget (s) when none is asked.")
    max_timeout: PositiveFloat = Field(
        86400.0, description="Largest run budget (s) a caller may ask."
    )
    heartbeat_timeout: PositiveFloat = Field(
        30.0, description="Seconds without a heartbeat before a run's worker counts as lost."
    )
    max_attempts: PositiveInt = Field(
        5, description="Attempts of a run whose worker is lost (infrastructure retries)."
    )
    cancel_grace: PositiveFloat = Field(
        60.0, description="Seconds a cancelled or timed-out pipeline gets to stop."
    )
    progress_interval: PositiveFloat = Field(
        1.0, description="Least seconds between two progress updates sent to Temporal by a run."
    )
    shutdown_grace: float = Field(
        30.0, ge=0, description="Seconds in-flight runs get to finish on SIGTERM."
    )
    max_body_bytes: PositiveInt = Field(
        1024 * 1024, description="Largest request body in bytes (413 above)."
    )
    max_event_streams: PositiveInt = Field(
        1000, description="Open `GET /runs/{id}/events` streams in one process before 429."
    )
    max_output_bytes: PositiveInt = Field(
        1024 * 1024,
        description="Largest JSON `outputs` in bytes; Temporal refuses payloads over 2 MB.",
    )
    header_timeout: PositiveFloat = Field(
        10.0,
        description="Seconds a client has to send a request's line and headers, from its first "
        "byte (or from connecting); slower ones get `408` and are disconnected.",
    )
    body_timeout: PositiveFloat = Field(
        30.0,
        description="Longest pause (s) between two pieces of a request body; a stalled upload "
        "gets `408` and is disconnected.",
    )
    max_header_bytes: PositiveInt = Field(
        64 * 1024, description="Largest request line + headers in bytes (431 above)."
    )
    max_connections: PositiveInt = Field(
        2000,
        description="Open HTTP connections one process holds; one more is answered `503` "
        "(`too_many_connections`) and closed.",
    )
    auth_token: str | None = Field(
        None, description="Bearer token(s), comma-separated; unset: no auth (warned at start)."
    )
    idempotency_retention: PositiveFloat = Field(
        86400.0,
        description="Seconds an Idempotency-Key keeps naming its run after the run ended "
        "(also bounded by the namespace's retention).",
    )
    webhook_secret: str | None = Field(
        None,
        description="Standard Webhooks secret(s) (`whsec_...`), comma-separated to rotate; "
        "unset: callbacks are refused (`warmrun dev` generates one).",
    )
    webhook_allowed_hosts: str | None = Field(
        None, description="Hosts webhooks may target even on private addresses, comma-separated."
    )
    webhook_retry_window: PositiveFloat = Field(
        86400.0, description="Seconds a webhook event keeps being retried."
    )
    webhook_max_interval: PositiveFloat = Field(
        300.0, description="Longest wait between two attempts of a webhook event."
    )
    webhook_attempt_timeout: PositiveFloat = Field(
        10.0, description="Seconds one webhook attempt may take."
    )
    temporal_ui_url: str = Field(
        "http://localhost:8233", description="Base URL of the Temporal UI, for links."
    )
    build_id: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="This replica's version in the deployment's Temporal Worker Deployment; "
        "default: a hash of the pipeline's source file, its name and warmrun's version.",
    )
    versioning: Versioning = Field(
        Versioning.PINNED,
        description="`pinned`: a run executes only on the version that started it; "
        "`auto-upgrade`: runs move to the current version; `off`: an unversioned worker.",
    )
    promote: bool = Field(
        False,
        description="Make this replica's version current once its worker polls (the first "
        "version of a new deployment always becomes current).",
    )
    run_worker: bool = Field(True, description="Execute runs in this process.")
    run_api: bool = Field(True, description="Serve the HTTP API from this process.")

    def with_defaults(self, defaults: dict[str, Any]) -> Settings:
        """These settings, with `defaults` for the ones neither the environment nor a
        flag set (a ZenML pipeline's lower concurrency, say)."""
        unset = {
            name: value for name, value in defaults.items() if name not in self.model_fields_set
        }
        return self.model_copy(update=unset) if unset else self

    def deployment_name(self, pipeline_name: str) -> str:
        return self.deployment or pipeline_name

    def run_policy(self, pipeline_name: str) -> RunPolicy:
        """What of this configuration a run's workflow follows."""
        return RunPolicy(
            pipeline_name=pipeline_name,
            heartbeat_timeout=self.heartbeat_timeout,
            default_timeout=self.default_timeout,
            max_timeout=self.max_timeout,
            max_attempts=self.max_attempts,
            cancel_grace=self.cancel_grace,
            webhook_retry_window=self.webhook_retry_window,
            webhook_max_interval=self.webhook_max_interval,
            webhook_attempt_timeout=self.webhook_attempt_timeout,
        )

    def webhook_secrets(self) -> list[str]:
        return _split(self.webhook_secret)

    def webhook_allowed_host_list(self) -> list[str]:
        return _split(self.webhook_allowed_hosts)

    def auth_tokens(self) -> list[str]:
        return _split(self.auth_token)


def _split(values: str | None) -> list[str]:
    return [value.strip() for value in (values or "").split(",") if value.strip()]
