"""Request and response bodies of the HTTP API: `/docs` is their manual.

The run resource itself (`GET /runs/{run_id}`) is `warmrun.resource.Run`, shared with
the run services and the client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, create_model

from warmrun.pipeline import Pipeline
from warmrun.resource import Run
from warmrun.run import RunStatus, WebhookEvent


class InvokeRequestBase(BaseModel):
    """`POST /invoke` body, a superset of ZenML's deployment invocation request."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False)

    run_name: str | None = Field(
        None,
        max_length=255,
        description="A human name for the run, shown in the run resource and the Temporal UI.",
    )
    timeout: float | None = Field(
        None,
        gt=0,
        description="Wall-clock budget of the run in seconds, counted from acceptance. "
        "At the deadline the pipeline is cancelled and the run ends `timed_out`.",
    )
    async_: bool = Field(
        False,
        alias="async",
        description="Answer `202 Accepted` at once instead of waiting for the run's end "
        "(same as `Prefer: respond-async`).",
    )
    callback_url: str | None = Field(
        None,
        max_length=2048,
        pattern=r"^[hH][tT][tT][pP][sS]?://[^\s/?#]+([/?#]\S*)?$",
        description="http(s) URL to POST the run's events to, signed per Standard Webhooks. "
        "Private, loopback and link-local targets are refused unless allowed by the server.",
    )
    callback_events: list[WebhookEvent] | None = Field(
        None,
        min_length=1,
        max_length=6,
        description="Events to deliver; default: the terminal one (`succeeded`, `failed`, "
        "`cancelled` or `timed_out`). `progress` events come at most once a second.",
    )
    skip_artifact_materialization: bool | None = Field(
        None, description="Accepted so ZenML callers work unchanged; it has no effect."
    )


def invoke_request_model(pipeline: Pipeline, max_timeout: float) -> type[InvokeRequestBase]:
    """The request body with `parameters` typed by the pipeline's signature and
    `timeout` bounded by the deployment's maximum, so `/docs` states both."""
    parameters = pipeline.parameters_model
    required = any(field.is_required() for field in parameters.model_fields.values())
    default: Any = Field(
        ... if required else None,
        description=f"Parameters of the `{pipeline.name}` pipeline.",
    )
    annotation: Any = parameters if required else parameters | None
    timeout_field = InvokeRequestBase.model_fields["timeout"]
    timeout: Any = Field(
        None,
        gt=0,
        le=max_timeout,
        description=f"{timeout_field.description} At most {max_timeout:g}.",
    )
    return create_model(
        "InvokeRequest",
        __base__=InvokeRequestBase,
        parameters=(annotation, default),
        timeout=(float | None, timeout),
    )


class InvokeMetadata(BaseModel):
    run_id: str
    run_name: str | None
    pipeline_name: str
    deployment_name: str
    parameters_used: dict[str, Any]
    status: RunStatus
    created_at: datetime | None = None
    finished_at: datetime | None = None


class ZenMLInvokeMetadata(InvokeMetadata):
    """The metadata of a ZenML pipeline's answer: ZenML's own fields besides warmrun's.
    `run_id` stays warmrun's (the run's Temporal workflow ID); ZenML's run is
    `zenml_run_id`, and `run_name` is the ZenML run's name, as ZenML answers it."""

    zenml_run_id: str | None = Field(None, description="ZenML's id of the pipeline run.")
    run_index: int | None = None
    snapshot_id: str | None = Field(None, description="The snapshot the deployment serves.")
    snapshot_name: str | None = None
    deployment_id: str | None = Field(
        None, description="The ZenML deployment served (`warmrun serve zenml:DEPLOYMENT`)."
    )


class InvokeResponse(BaseModel):
    """ZenML-shaped answer of a sync invocation; a run that ended badly still answers
    200 with `success: false` and `metadata.status` saying how it ended."""

    success: bool
    outputs: dict[str, Any] | None
    execution_time: float | None = Field(
        None, description="Seconds from acceptance to the run's end."
    )
    metadata: SerializeAsAny[InvokeMetadata]
    error: str | None = None


class RunList(BaseModel):
    """A page of runs; listed runs carry status and timing (`GET /runs/{id}` has the
    outputs and error)."""

    runs: list[Run]
    next_page_token: str | None = Field(
        None, description="Pass as `page_token` for the next page; null on the last one."
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    temporal: bool = Field(description="The Temporal server answers.")
    worker: bool | None = Field(description="This process's worker is polling (null: API-only).")
    draining: bool = Field(False, description="Shutting down: no new runs are taken here.")
    detail: str | None = Field(None, description="Why this replica is not ready.")


class DeploymentInfo(BaseModel):
    pipeline_name: str
    deployment_name: str
    task_queue: str
    namespace: str
    parameters_schema: dict[str, Any]
    outputs_schema: dict[str, Any] | None
    max_concurrent_runs: int
    default_timeout: float
    max_timeout: float
    heartbeat_timeout: float
    versions: dict[str, str]
