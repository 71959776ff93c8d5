"""A ZenML pipeline as a warmrun `Pipeline`: ZenML's own contract, warmrun's runs.

What the API needs is computed when the pipeline is loaded (ZenML's parameters model
and its input and output schemas, compiled from the pipeline's code), so accepting a
run never touches the ZenML store. The worker's warm-up writes to it: one snapshot
per process start (a `@pipeline`; `zenml:DEPLOYMENT` serves the deployment's), then
the pipeline's `on_init`.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from uuid import uuid4

from pydantic import BaseModel
from zenml.client import Client
from zenml.pipelines.pipeline_definition import Pipeline as ZenMLPipelineDefinition
from zenml.utils import source_utils

from warmrun.context import RunContext
from warmrun.pipeline import Pipeline, PipelineLoadError
from warmrun.run import CloseZenMLRunInput, Progress, RunError
from warmrun.zenml import runner
from warmrun.zenml.runner import ZenMLTarget

MAX_CONCURRENT_RUNS = 4
"""ZenML runs executing at once in one process, unless WARMRUN_MAX_CONCURRENT_RUNS says
otherwise. A SQLite ZenML store has 15 pooled connections (SQLAlchemy's default) and
one writer at a time; ZenML's own deployment server runs up to 40 pipelines at once
on it and fails about a third of 50 concurrent calls with `QueuePool limit ... timed
out` on this 2-core machine. Four is the fastest setting measured there (BENCHMARKS.md)."""


@dataclasses.dataclass(frozen=True)
class ZenMLPipeline(Pipeline):
    """A ZenML pipeline served by warmrun: parameters validated by ZenML's input
    model, outputs named as ZenML's deployments name them, each run a ZenML run."""

    definition: ZenMLPipelineDefinition | None = None
    """The `@pipeline` served (None: a registered deployment's snapshot)."""
    target: ZenMLTarget | None = None
    """Known at load for a deployment; made at warm-up for a `@pipeline`."""
    input_schema: dict[str, Any] = dataclasses.field(default_factory=dict)
    output_schema: dict[str, Any] | None = None
    deployment_name: str | None = None

    def parameters_schema(self) -> dict[str, Any]:
        return self.input_schema or self.parameters_model.model_json_schema()

    def outputs_schema(self) -> dict[str, Any] | None:
        return self.output_schema

    def arguments(self, parameters: BaseModel, context: RunContext) -> dict[str, Any]:
        return {"parameters": parameters, "context": context}

    def error_text(self, error: RunError, progress: Progress | None) -> str:
        """ZenML's own wording first (`Failed to execute pipeline: ...`), as its
        deployments answer, then the failed steps' exceptions."""
        if error.message.startswith(runner.FAILURE_PREFIX):
            return error.message
        return super().error_text(error, progress)

    def close_run(self, input: CloseZenMLRunInput) -> None:
        runner.close(input)

    def settings_defaults(self) -> dict[str, Any]:
        defaults: dict[str, Any] = {"max_concurrent_runs": MAX_CONCURRENT_RUNS}
        if self.deployment_name:
            defaults["deployment"] = self.deployment_name
        return defaults

    @property
    def links_zenml_runs(self) -> bool:
        return True


def serve_pipeline(definition: ZenMLPipelineDefinition) -> ZenMLPipeline:
    """A `@pipeline` object, loaded without touching the ZenML store."""
    if definition.is_dynamic:
        raise PipelineLoadError(
            f"ZenML pipeline {definition.name!r} is dynamic; warmrun serves static pipelines"
        )
    model = definition._compute_input_model()  # what ZenML's deployment service uses
    if model is None:
        raise PipelineLoadError(
            f"ZenML cannot build an input model for pipeline {definition.name!r}: its "
            "parameters must be JSON-serialisable (as for `zenml pipeline deploy`)"
        )
    try:
        definition.prepare()  # compiles its steps and outputs (no store involved)
    except Exception as err:
        raise PipelineLoadError(
            f"cannot compile ZenML pipeline {definition.name!r} (a served pipeline needs a "
            f"default for each parameter, or one set with `with_options(parameters=...)`): {err}"
        ) from None
    output_schema = definition._compute_output_schema()
    if output_schema is None:
        raise PipelineLoadError(
            f"ZenML cannot build an output schema for pipeline {definition.name!r}: its "
            "outputs must be JSON-serialisable (as for `zenml pipeline deploy`)"
        )

    def warm_up() -> ZenMLTarget:
        # One snapshot per process start: the runs of this process derive from it.
        name = f"warmrun-{definition.name}-{uuid4().hex[:8]}"
        target = ZenMLTarget(definition.create_snapshot(name=name))
        target.warm_up()
        return target

    return ZenMLPipeline(
        name=definition.name,
        function=_run,
        parameters_model=model,
        init=warm_up,
        cleanup=_cool_down,
        definition=definition,
        input_schema=definition._compute_input_schema() or {},
        output_schema=output_schema,
    )


def load_deployment(name_or_id: str) -> ZenMLPipeline:
    """A registered ZenML deployment (what `zenml pipeline deploy` made): its snapshot,
    read from the store once, at load."""
    try:
        deployment = Client().get_deployment(name_or_id)
    except KeyError as err:
        raise PipelineLoadError(f"no ZenML deployment {name_or_id!r}: {err}") from None
    snapshot = deployment.snapshot
    spec = snapshot.pipeline_spec if snapshot is not None else None
    if snapshot is None or spec is None or spec.source is None or not spec.input_schema:
        raise PipelineLoadError(f"ZenML deployment {name_or_id!r} has no deployable snapshot")
    if snapshot.is_dynamic:
        raise PipelineLoadError(f"ZenML deployment {name_or_id!r} serves a dynamic pipeline")
    try:
        definition: ZenMLPipelineDefinition = source_utils.load(spec.source)
    except Exception as err:
        raise PipelineLoadError(
            f"cannot import the pipeline of ZenML deployment {name_or_id!r} ({spec.source}): "
            f"{err}; run warmrun from the ZenML repository that deployed it"
        ) from None
    model = definition._compute_input_model()
    if model is None:
        raise PipelineLoadError(f"ZenML cannot build the input model of {name_or_id!r}")
    target = ZenMLTarget(snapshot, deployment)

    def warm_up() -> ZenMLTarget:
        target.warm_up()
        return target

    return ZenMLPipeline(
        name=snapshot.pipeline_configuration.name,
        function=_run,
        parameters_model=model,
        init=warm_up,
        cleanup=_cool_down,
        target=target,
        input_schema=spec.input_schema,
        output_schema=spec.output_schema,
        deployment_name=deployment.name,
    )


def _run(parameters: BaseModel, context: RunContext) -> dict[str, Any]:
    """The run's call in the worker's thread; the warm state is the ZenML target."""
    target = context.state
    if not isinstance(target, ZenMLTarget):
        raise RuntimeError("the ZenML pipeline was not warmed up in this process")
    return runner.execute(target, parameters, context, context.run_name)


def _cool_down(target: Any) -> None:
    if isinstance(target, ZenMLTarget):
        target.cool_down()
