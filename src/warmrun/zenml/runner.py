"""Running one warmrun run as a ZenML pipeline run, inside the warm process.

The calls are those of ZenML's own deployment server
(`zenml.deployers.server.service.PipelineDeploymentService`): a per-run snapshot with
the parameters baked in (cache off, steps inline), a placeholder run, the deployment
runtime that captures step outputs in memory, and `SharedLocalOrchestrator`, the
orchestrator that server swaps in so the pipeline's `on_init` runs once per process.
warmrun adds what it needs by subclassing that orchestrator through its documented
hooks, not by patching ZenML:

- `get_orchestrator_run_id()` is the warmrun run_id: ZenML identifies a run by
  (snapshot, orchestrator_run_id), so a retry on another replica that reuses the
  run's per-run snapshot joins the same ZenML run;
- `run_step()` marks each step as warmrun progress, stops between steps when the run
  is cancelled or timed out, and skips the steps that already succeeded in that run.

A step's own code is never interrupted mid-call: a stop takes effect before the next
step. However the run ends here, its ZenML run ends in a terminal state, except when
the stop is this worker's shutdown (a drain after SIGTERM, a re-deploy): the run's
next attempt, on another process, continues that ZenML run.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import zenml.pipelines.run_utils as run_utils
from pydantic import BaseModel
from temporalio.exceptions import ApplicationError
from zenml import log_metadata
from zenml.client import Client
from zenml.config.step_configurations import Step
from zenml.deployers.server import runtime
from zenml.deployers.server.service import SharedLocalOrchestrator
from zenml.deployers.utils import deployment_snapshot_request_from_source_snapshot
from zenml.enums import ExecutionStatus, StackComponentType
from zenml.execution.step.utils import launch_step
from zenml.models import PipelineRunResponse, PipelineRunTriggerInfo, PipelineSnapshotResponse
from zenml.models.v2.core.deployment import DeploymentResponse
from zenml.orchestrators.base_orchestrator import BaseOrchestrator
from zenml.orchestrators.local.local_orchestrator import LocalOrchestratorConfig
from zenml.orchestrators.publish_utils import (
    publish_failed_pipeline_run,
    publish_failed_step_run,
    publish_pipeline_run_status_update,
)
from zenml.steps.utils import get_unique_step_output_names
from zenml.utils.logging_utils import setup_logging_context

from warmrun.context import CancellationRequested, RunContext
from warmrun.run import CloseZenMLRunInput, RunStatus, ZenMLRunLink

logger = logging.getLogger(__name__)

RUN_METADATA_KEYS = ("warmrun_run_id", "temporal_workflow_id")
"""ZenML run metadata naming the warmrun run (its id is also the Temporal workflow ID)."""
FAILURE_PREFIX = "Failed to execute pipeline: "
"""How ZenML's deployment server words a failed invocation's `error`."""
DEADLINE_SLACK = timedelta(seconds=1)
"""A stop asked this close to the run's deadline is its timeout (clocks differ a little)."""


class RunStopped(BaseException):
    """Raised between steps when the run must stop (cancel or timeout).

    A BaseException on purpose: `LocalOrchestrator.submit_pipeline` catches `Exception`
    from a step, records it as a failed step and goes on with the next one.
    """

    def __init__(self, reason: str, *, timed_out: bool, worker_shutdown: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timed_out = timed_out
        self.worker_shutdown = worker_shutdown


@dataclasses.dataclass(frozen=True)
class ZenMLTarget:
    """What a process serves, fixed at warm-up: the snapshot every run derives from."""

    source_snapshot: PipelineSnapshotResponse
    deployment: DeploymentResponse | None = None

    @property
    def pipeline_name(self) -> str:
        return self.source_snapshot.pipeline_configuration.name

    @property
    def step_names(self) -> tuple[str, ...]:
        """In the order `LocalOrchestrator` runs them."""
        return tuple(self.source_snapshot.step_configurations)

    def output_names(self) -> dict[tuple[str, str], str]:
        """(step, output) -> the key ZenML's deployment answers it under: the bare
        output name when it is unique, else `<step>.<output>` (`service._map_outputs`)."""
        spec = self.source_snapshot.pipeline_spec
        outputs = spec.outputs if spec is not None else []
        unique = get_unique_step_output_names({(o.step_name, o.output_name): o for o in outputs})
        return {key: value[1] for key, value in unique.items()}

    def link(self, run: PipelineRunResponse) -> ZenMLRunLink:
        return ZenMLRunLink(
            run_id=str(run.id),
            run_name=run.name,
            run_index=run.index,
            snapshot_id=str(self.source_snapshot.id),
            snapshot_name=self.source_snapshot.name,
            run_snapshot_id=str(run.snapshot.id) if run.snapshot else None,
            deployment_id=str(self.deployment.id) if self.deployment else None,
            deployment_name=self.deployment.name if self.deployment else None,
            original_run_id=str(run.original_run.id) if run.original_run else None,
        )

    def warm_up(self) -> None:
        """The pipeline's `on_init`, once per process: its state lives in ZenML's
        process-wide `RunContext`, shared by every run here."""
        Client().active_stack.validate()
        BaseOrchestrator.run_init_hook(self.source_snapshot)

    def cool_down(self) -> None:
        BaseOrchestrator.run_cleanup_hook(self.source_snapshot)


class WarmrunOrchestrator(SharedLocalOrchestrator):
    """ZenML's deployment orchestrator with warmrun's run id, progress, stops
    between steps and skipping of the steps a lost attempt finished."""

    def __init__(
        self, context: RunContext, *, done: set[str], retries: dict[str, int] | None = None
    ) -> None:
        super().__init__(
            name="warmrun",
            id=uuid4(),
            config=LocalOrchestratorConfig(),
            flavor="local",
            type=StackComponentType.ORCHESTRATOR,
            user=uuid4(),
            created=datetime.now(),
            updated=datetime.now(),
        )
        self._context = context
        self._done = done
        self._retries = retries or {}
        self.failures: dict[str, BaseException] = {}

    def get_orchestrator_run_id(self) -> str:
        return self._context.run_id

    def run_step(self, step: Step) -> None:
        assert self._active_snapshot is not None
        name = step.spec.invocation_id
        if self._context.cancelled:
            raise stop_of(self._context)
        try:
            with self._context.step(name):  # checks for a stop once more
                if name in self._done:  # succeeded in an earlier attempt of this run
                    return
                launch_step(
                    snapshot=self._active_snapshot,
                    step=step,
                    orchestrator_run_id=self.get_orchestrator_run_id(),
                    retry=True,
                    remaining_retries=self._retries.get(name),
                )
        except CancellationRequested:
            raise stop_of(self._context) from None
        except Exception as err:
            self.failures[name] = err
            raise


def stop_of(context: RunContext) -> RunStopped:
    """Why a run was asked to stop: this worker's shutdown (the run goes on in another
    attempt), its timeout once the deadline is reached, else a cancel."""
    if context._stopping_for_shutdown:
        return RunStopped(
            f"the worker of warmrun run {context.run_id} shut down",
            timed_out=False,
            worker_shutdown=True,
        )
    deadline = context.deadline
    if deadline is not None and datetime.now(UTC) >= deadline - DEADLINE_SLACK:
        return RunStopped(f"warmrun run {context.run_id} timed out", timed_out=True)
    return RunStopped(f"warmrun run {context.run_id} was cancelled", timed_out=False)


def execute(
    target: ZenMLTarget, parameters: BaseModel, context: RunContext, run_name: str | None
) -> dict[str, Any]:
    """Run (or, on a later attempt, continue) the warmrun run `context.run_id` as a
    ZenML pipeline run; its outputs keyed as ZenML's deployment answers them.

    A failing step raises an `ApplicationError` of the step's exception type whose
    message starts with ZenML's own wording; a stop raises `CancellationRequested`.
    """
    client = Client()
    params = parameters.model_dump()
    context.steps_total = len(target.step_names)
    # Only a retry can find a run: the first attempt makes no lookup.
    previous = find_zenml_run(context.run_id) if context.attempt > 1 else None
    retries: dict[str, int] = {}
    if previous is not None and previous.snapshot is not None:
        snapshot = client.get_snapshot(previous.snapshot.id)
        if _failed_for_replay(previous):  # the last attempt died as it began the replay
            run, snapshot = _replay(target, previous, run_name, params, context)
        elif previous.status.is_finished:  # the last attempt died after ZenML finished
            context._link_zenml_run(target.link(previous))
            return _finished(target, previous, context)
        else:
            # Inline steps still RUNNING cannot be running: this is a new attempt.
            in_flight = [
                s.name for s in previous.steps.values() if s.status == ExecutionStatus.RUNNING
            ]
            attempts = {name: _step_attempts(previous.id, name) for name in in_flight}
            if all(attempts[name] <= _max_retries(snapshot, name) for name in in_flight):
                run = previous  # ZenML takes another step run for each: continue in place
                retries = {
                    name: _max_retries(snapshot, name) - attempts[name] for name in in_flight
                }
            else:
                fail_for_replay(previous, in_flight, context.run_id)
                run, snapshot = _replay(target, previous, run_name, params, context)
    else:
        snapshot = _per_run_snapshot(target, run_name, params)
        run = run_utils.create_placeholder_run(
            snapshot=snapshot,
            orchestrator_run_id=context.run_id,
            trigger_info=_trigger(target),
        )
    # Again on every attempt: the one that made the run may have died before either.
    log_metadata(
        metadata=dict.fromkeys(RUN_METADATA_KEYS, context.run_id), run_id_name_or_prefix=run.id
    )
    context._link_zenml_run(target.link(run))

    if run.original_run is not None:  # a replay: ZenML itself skips what succeeded
        original = client.get_pipeline_run(run.original_run.id, hydrate=True)
        for name in target.step_names:
            if name in original.steps and original.steps[name].status.is_successful:
                with context.step(name):
                    pass
    done = {name for name, step in run.steps.items() if step.status.is_successful}
    orchestrator = WarmrunOrchestrator(context, done=done, retries=retries)
    runtime.start(request_id=context.run_id, snapshot=snapshot, parameters=params)
    try:
        # The run's log context, non-blocking on exit, as ZenML's service sets it up.
        with setup_logging_context(source="deployment", pipeline_run=run, block_on_exit=False):
            orchestrator.run(snapshot=snapshot, stack=client.active_stack, placeholder_run=run)
        captured = runtime.get_outputs() if runtime.is_active() else {}
    except RunStopped as stop:
        if not stop.worker_shutdown:  # else the ZenML run goes on in the next attempt
            _finish_stopped(run.id, stop)
            _never_left_running(run.id)
        raise CancellationRequested(stop.reason) from None
    except Exception as err:
        _never_left_running(run.id)
        raise _failure(err, orchestrator.failures) from err
    finally:
        runtime.stop()
    return _outputs(target, run.id, captured)


def close(input: CloseZenMLRunInput) -> None:
    """Finish a ZenML run whose warmrun run ended while nobody finished it (its worker
    lost for good, a timeout it could not stop for): idempotent, any process."""
    client = Client()
    run = client.get_pipeline_run(UUID(input.zenml_run_id), hydrate=True)
    if run.status.is_finished:
        return
    for step in run.steps.values():
        if not step.status.is_finished:
            publish_failed_step_run(step.id)
    status = (
        ExecutionStatus.STOPPING if input.status == RunStatus.CANCELLED else ExecutionStatus.FAILED
    )
    publish_pipeline_run_status_update(
        pipeline_run_id=run.id, status=status, status_reason=f"warmrun: {input.reason}"
    )
    _never_left_running(run.id)


def find_zenml_run(run_id: str) -> PipelineRunResponse | None:
    """The ZenML run of a warmrun run (after a replay, the newest of the two)."""
    page = Client().list_pipeline_runs(
        orchestrator_run_id=run_id, sort_by="desc:created", hydrate=True, size=1
    )
    return page.items[0] if page.items else None


def _trigger(target: ZenMLTarget) -> PipelineRunTriggerInfo:
    return PipelineRunTriggerInfo(deployment_id=target.deployment.id if target.deployment else None)


def _per_run_snapshot(
    target: ZenMLTarget, run_name: str | None, params: dict[str, Any], *, replay: bool = False
) -> PipelineSnapshotResponse:
    """ZenML's deployment snapshot of one invocation: parameters in the step
    configurations, cache off, steps inline. A replay also skips the steps that
    succeeded in the run it replays."""
    request = deployment_snapshot_request_from_source_snapshot(
        source_snapshot=target.source_snapshot, run_name=run_name, deployment_parameters=params
    )
    if replay:
        request.pipeline_configuration = request.pipeline_configuration.model_copy(
            update={"skip_successful_steps": True}
        )
    return Client().zen_store.create_snapshot(request)


REPLAY_REASON = "warmrun worker lost during step(s) "
"""How the interrupted ZenML run's status reason begins: a later attempt that finds it
failed this way knows a replay of it was due, whether or not it was created."""


def fail_for_replay(previous: PipelineRunResponse, in_flight: list[str], run_id: str) -> None:
    """Close the interrupted run as failed, its steps in flight with it: ZenML refuses
    them another step run, so the warmrun run goes on in a replay of it."""
    for name in in_flight:
        publish_failed_step_run(previous.steps[name].id)
    publish_pipeline_run_status_update(
        pipeline_run_id=previous.id,
        status=ExecutionStatus.FAILED,
        status_reason=f"{REPLAY_REASON}{', '.join(in_flight)}; warmrun run {run_id} "
        "continues in a replay of this run",
    )


def _failed_for_replay(run: PipelineRunResponse) -> bool:
    reason = run.body.status_reason or ""
    return run.status == ExecutionStatus.FAILED and reason.startswith(REPLAY_REASON)


def _replay(
    target: ZenMLTarget,
    previous: PipelineRunResponse,
    run_name: str | None,
    params: dict[str, Any],
    context: RunContext,
) -> tuple[PipelineRunResponse, PipelineSnapshotResponse]:
    """Go on in a replay of the failed `previous` (ZenML's
    `Pipeline.replay(skip_successful_steps=True)`, done in this process): its
    successful steps are linked, not run again."""
    snapshot = _per_run_snapshot(
        target, f"{run_name}-attempt-{context.attempt}" if run_name else None, params, replay=True
    )
    run = run_utils.create_placeholder_run(
        snapshot=snapshot,
        orchestrator_run_id=context.run_id,
        original_run_id=previous.id,
        trigger_info=_trigger(target),
    )
    return run, snapshot


def _step_attempts(zenml_run_id: UUID, step: str) -> int:
    return Client().list_run_steps(pipeline_run_id=zenml_run_id, name=step, size=1).total


def _max_retries(snapshot: PipelineSnapshotResponse, step: str) -> int:
    retry = snapshot.step_configurations[step].config.retry
    return retry.max_retries if retry else 0


def _finish_stopped(zenml_run_id: UUID, stop: RunStopped) -> None:
    """A cancel ends the ZenML run `stopped` (what `zenml pipeline runs stop` gives:
    STOPPING turns STOPPED at once as no step runs between steps), a timeout `failed`."""
    status = ExecutionStatus.FAILED if stop.timed_out else ExecutionStatus.STOPPING
    publish_pipeline_run_status_update(
        pipeline_run_id=zenml_run_id, status=status, status_reason=stop.reason
    )


def _never_left_running(zenml_run_id: UUID) -> None:
    run = Client().get_pipeline_run(zenml_run_id, hydrate=False)
    if not run.status.is_finished:
        publish_failed_pipeline_run(zenml_run_id)


def _failure(error: Exception, failures: dict[str, BaseException]) -> ApplicationError:
    """ZenML's server answers `Failed to execute pipeline: <orchestrator error>`; the
    failed steps' own exceptions follow it, and the first one names the error's type."""
    lines = [f"{FAILURE_PREFIX}{error}"]
    lines += [f"{name}: {type(err).__name__}: {err}" for name, err in failures.items()]
    first = next(iter(failures.values()), error)
    return ApplicationError("\n".join(lines), type=type(first).__name__, non_retryable=True)


def _finished(target: ZenMLTarget, run: PipelineRunResponse, context: RunContext) -> dict[str, Any]:
    """The outcome of a ZenML run that ended before this attempt began."""
    for name in target.step_names:
        with context.step(name):
            pass
    if run.status != ExecutionStatus.COMPLETED:
        raise ApplicationError(
            f"{FAILURE_PREFIX}the ZenML run ended {run.status.value}: "
            f"{run.body.status_reason or 'no reason recorded'}",
            type="ZenMLRunFailed",
            non_retryable=True,
        )
    return _outputs(target, run.id, {})


def _outputs(
    target: ZenMLTarget, zenml_run_id: UUID, captured: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The pipeline's outputs: from ZenML's in-memory capture for the steps this
    process ran, loaded from their artifacts for steps an earlier attempt ran."""
    outputs: dict[str, Any] = {}
    run: PipelineRunResponse | None = None
    for (step, output), name in target.output_names().items():
        if step in captured:
            outputs[name] = captured[step].get(output)
            continue
        run = run or Client().get_pipeline_run(zenml_run_id, hydrate=True)
        step_run = run.steps.get(step)
        artifacts = step_run.outputs.get(output) if step_run else None
        if not artifacts and run.original_run is not None:  # a replay links the original's
            original = Client().get_pipeline_run(run.original_run.id, hydrate=True)
            step_run = original.steps.get(step)
            artifacts = step_run.outputs.get(output) if step_run else None
        outputs[name] = artifacts[0].load() if artifacts else None
    return outputs
