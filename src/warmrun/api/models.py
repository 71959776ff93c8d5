"""Request and response bodies of the HTTP API: `/docs` is their manual.

The run resource itself (`GET /runs/{run_id}`) is `warmrun.resource.Run`, shared with
the run services and the client.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from warmrun.pipeline import Pipeline
from warmrun.resource import Run
from warmrun.run import RunStatus, WebhookEvent
from warmrun.settings import Versioning

NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f-\x9f]*$"
"""A run name is printed to operators' terminals: no C0/C1 control characters (ESC
starts an escape sequence), nor DEL."""


MAX_VALUE_ERRORS = 20


def unrepresentable_values(
    body: Any, non_finite_parameters: frozenset[str] = frozenset()
) -> list[InitErrorDetails]:
    """What a JSON body may not carry into a run, wherever it is: strings with a lone
    surrogate (`"\\ud800"` parses, but no UTF-8 can encode it, so the run's input could
    never be written) and NaN, Infinity or numbers past a double's range (not JSON:
    Python's parser reads them as floats the answer could not echo), except inside a
    parameter whose type allows them. Iterative, so a deep body cannot exhaust the stack."""
    errors: list[InitErrorDetails] = []
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), body)]
    while stack and len(errors) < MAX_VALUE_ERRORS:
        loc, value = stack.pop()
        if isinstance(value, str):
            if not _encodable(value):
                errors.append(_surrogate_error(loc, value))
        elif isinstance(value, float):
            allowed = len(loc) >= 2 and loc[0] == "parameters" and loc[1] in non_finite_parameters
            if not math.isfinite(value) and not allowed:
                errors.append(
                    InitErrorDetails(
                        type=PydanticCustomError(
                            "finite_number",
                            "NaN, Infinity and numbers beyond a double's range are not JSON "
                            "numbers, and this field does not accept them",
                        ),
                        loc=loc,
                        input=str(value),
                    )
                )
        elif isinstance(value, dict):
            for key, item in value.items():
                key_loc = (*loc, _printable_key(key))
                if isinstance(key, str) and not _encodable(key):
                    errors.append(_surrogate_error(key_loc, key))
                else:
                    stack.append((key_loc, item))
        elif isinstance(value, list):
            stack.extend(((*loc, index), item) for index, item in enumerate(value))
    return errors


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _printable_key(key: Any) -> Any:
    """A key as an error location can show it (the problem body must encode)."""
    return key.encode(errors="backslashreplace").decode() if isinstance(key, str) else key


def _surrogate_error(loc: tuple[str | int, ...], text: str) -> InitErrorDetails:
    return InitErrorDetails(
        type=PydanticCustomError(
            "string_unicode",
            "a string with a lone UTF-16 surrogate (such as \\ud800) is not text UTF-8 can carry",
        ),
        loc=loc,
        input=_printable_key(text),
    )


class InvokeRequestBase(BaseModel):
    """`POST /invoke` body, a superset of ZenML's deployment invocation request.

    Its own fields are strict (`"timeout": "10"`, `"timeout": true` or `"async": "yes"`
    are 422, not coerced): a typo in a control field must not silently change what the
    run does. The pipeline's `parameters` follow pydantic's usual rules.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=False)

    run_name: str | None = Field(
        None,
        strict=True,
        max_length=255,
        pattern=NO_CONTROL_CHARACTERS,
        description="A human name for the run, shown in the run resource and the Temporal "
        "UI. No control characters.",
    )
    timeout: float | None = Field(
        None,
        strict=True,
        gt=0,
        description="Wall-clock budget of the run in seconds, counted from acceptance. "
        "At the deadline the pipeline is cancelled and the run ends `timed_out`.",
    )
    async_: bool = Field(
        False,
        strict=True,
        alias="async",
        description="Answer `202 Accepted` at once instead of waiting for the run's end "
        "(same as `Prefer: respond-async`).",
    )
    callback_url: str | None = Field(
        None,
        strict=True,
        max_length=2048,
        pattern=r"^[hH][tT][tT][pP][sS]?://[^\s/?#\x00-\x1f\x7f-\x9f]+"
        r"([/?#][^\s\x00-\x1f\x7f-\x9f]*)?$",
        description="http(s) URL to POST the run's events to, signed per Standard Webhooks. "
        "Private, loopback and link-local targets are refused unless allowed by the server.",
    )
    callback_events: list[WebhookEvent] | None = Field(
        None,
        strict=True,
        min_length=1,
        max_length=6,
        description="Events to deliver; default: the terminal one (`succeeded`, `failed`, "
        "`cancelled` or `timed_out`). `progress` events come at most once a second.",
    )
    skip_artifact_materialization: bool | None = Field(
        None, strict=True, description="Accepted so ZenML callers work unchanged; it has no effect."
    )

    non_finite_parameters: ClassVar[frozenset[str]] = frozenset()
    """The pipeline's parameters that may be NaN or Infinity."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_unrepresentable(cls, body: Any) -> Any:
        """Before anything else, so that no such value reaches a field or a run."""
        errors = unrepresentable_values(body, cls.non_finite_parameters)
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return body


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
        strict=True,
        gt=0,
        le=max_timeout,
        description=f"{timeout_field.description} At most {max_timeout:g}.",
    )

    def travels_as_json(model: BaseModel | None) -> BaseModel | None:
        """A NaN or Infinity that the run's input cannot carry back to this value (a
        strict field refuses its text form) is refused now, not by the worker."""
        if model is not None:
            try:
                pipeline.parameters_json(model)
            except ValidationError as err:
                raise PydanticCustomError(
                    "non_finite_unsupported",
                    "a NaN or Infinity here cannot travel to the pipeline as JSON: {error}",
                    {"error": str(err)},
                ) from None
        return model

    request_model = create_model(
        "InvokeRequest",
        __base__=InvokeRequestBase,
        __validators__={"travels_as_json": field_validator("parameters")(travels_as_json)},
        parameters=(annotation, default),
        timeout=(float | None, timeout),
    )
    request_model.non_finite_parameters = pipeline.non_finite_parameters
    return request_model


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
    drained: bool | None = Field(
        None,
        description="This replica's version is neither current nor has open pinned runs: "
        "stopping it strands no run (it stays ready). Null: unversioned, or unknown to "
        "Temporal.",
    )
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
    build_id: str = Field(
        description="This replica's version in the Worker Deployment `worker_deployment`."
    )
    worker_deployment: str = Field(description="The Temporal Worker Deployment.")
    versioning: Versioning = Field(
        description="`pinned`, `auto-upgrade` or `off` (an unversioned worker)."
    )
    current: bool | None = Field(
        None,
        description="New runs of the deployment execute on this version. Null: "
        "unversioned, or unknown to Temporal (no worker of it has polled).",
    )
    drained: bool | None = Field(
        None,
        description="Neither current nor with open pinned runs: stopping this version's "
        "replicas strands no run. Temporal rechecks it every few minutes.",
    )
    versions: dict[str, str]
