"""Worker Versioning: each replica is one version of its deployment's Temporal Worker
Deployment, so that new pipeline code rolls out while runs are in flight.

- The Worker Deployment is named like the deployment's task queue
  (`warmrun-<deployment>`, `run.worker_deployment_for`); a replica's version is its
  **build id**: `WARMRUN_BUILD_ID` / `--build-id`, else a hash of the pipeline's source
  file, its name and warmrun's version. Changed pipeline code, or another warmrun, is
  another version without anyone having to name it.
- Runs are **pinned** to the version whose worker first took them
  (`WARMRUN_VERSIONING=pinned`, the default): a retried attempt never executes other
  code than the one whose checkpoints it resumes. `auto-upgrade` lets runs move to the
  current version at their next task, for pipelines whose checkpoints every version
  reads. `off` polls unversioned, as warmrun did before versions existed.
- New runs go to the deployment's **current** version. A deployment without one runs
  nothing, so the first version of a new deployment makes itself current;
  later ones become current with `--promote` (or `temporal worker deployment
  set-current-version`). Either waits until this replica's worker has polled, since
  Temporal knows a version only from its pollers.
- Eager workflow start bypasses that routing, so a replica starts runs eagerly only
  while its version is current (`CurrentVersionCache`); webhook deliveries are
  warmrun's own code and always auto-upgrade (`workflows/webhook_delivery.py`).

The Python SDK (1.35) has no client API for Worker Deployments: the raw RPCs of
`client.workflow_service` are used, with the deployment's conflict token, so that two
replicas promoting at once cannot undo each other unnoticed.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import sys
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from temporalio.api.deployment.v1 import WorkerDeploymentVersion as VersionMessage
from temporalio.api.enums.v1 import VersioningBehavior as BehaviorMessage
from temporalio.api.enums.v1 import WorkerDeploymentVersionStatus
from temporalio.api.workflow.v1 import WorkflowExecutionVersioningInfo
from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    DescribeWorkerDeploymentResponse,
    DescribeWorkerDeploymentVersionRequest,
    SetWorkerDeploymentCurrentVersionRequest,
)
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import WorkerDeploymentConfig

from warmrun import __version__
from warmrun.pipeline import Pipeline
from warmrun.run import worker_deployment_for
from warmrun.settings import Settings, Versioning

logger = logging.getLogger(__name__)

BUILD_ID_DIGITS = 12
PROMOTE_TIMEOUT = 60.0
"""Seconds a replica waits for its worker to register its version and for it to become
current: registration takes about a second, setting the current version another."""
PROMOTER_IDENTITY = "warmrun --promote"


class VersioningError(RuntimeError):
    """This replica's version cannot be served or made current; the message says why and
    what to do."""


class Promotion(StrEnum):
    """What making this replica's version current did."""

    PROMOTED = "promoted"
    ALREADY_CURRENT = "already current"
    KEPT = "kept"
    """Another version is current and this one was not asked to take over."""


def default_build_id(pipeline: Pipeline) -> str:
    """A hash of the pipeline's source file, its name and warmrun's version.

    Only the file that defines the pipeline is read: code it imports from elsewhere,
    its dependencies and its data do not change the hash. Deployments that ship those
    separately set `WARMRUN_BUILD_ID` (a git commit, an image tag)."""
    source = pipeline_source(pipeline)
    digest = hashlib.sha256()
    for part in (b"warmrun", __version__.encode(), pipeline.name.encode(), source.read_bytes()):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:BUILD_ID_DIGITS]


def pipeline_source(pipeline: Pipeline) -> Path:
    """The file that defines the pipeline (through decorators that set `__wrapped__`)."""
    function = inspect.unwrap(pipeline.function)
    candidates = [function, type(function)]
    module = sys.modules.get(getattr(function, "__module__", "") or "")
    if module is not None:
        candidates.append(module)
    for candidate in candidates:
        try:
            source = inspect.getsourcefile(candidate)  # type: ignore[arg-type]
        except TypeError:  # built in, or defined interactively
            continue
        if source and Path(source).is_file():
            return Path(source)
    raise VersioningError(
        f"cannot find the source file of pipeline {pipeline.name!r} to derive a build id "
        "from: set WARMRUN_BUILD_ID (or --build-id), or WARMRUN_VERSIONING=off"
    )


@dataclass(frozen=True)
class ReplicaVersion:
    """The Worker Deployment version this replica's worker is, and how its runs follow
    versions."""

    deployment_name: str
    """The Temporal Worker Deployment (`warmrun-<deployment>`)."""
    build_id: str
    versioning: Versioning

    @property
    def versioned(self) -> bool:
        return self.versioning is not Versioning.OFF

    @property
    def temporal(self) -> WorkerDeploymentVersion:
        return WorkerDeploymentVersion(self.deployment_name, self.build_id)

    def worker_config(self) -> WorkerDeploymentConfig | None:
        """The worker's deployment options; None polls unversioned."""
        if not self.versioned:
            return None
        behavior = (
            VersioningBehavior.AUTO_UPGRADE
            if self.versioning is Versioning.AUTO_UPGRADE
            else VersioningBehavior.PINNED
        )
        return WorkerDeploymentConfig(
            version=self.temporal, use_worker_versioning=True, default_versioning_behavior=behavior
        )


def replica_version(pipeline: Pipeline, settings: Settings) -> ReplicaVersion:
    versioning = settings.versioning
    deployment = settings.deployment_name(pipeline.name)
    if versioning is not Versioning.OFF and "." in deployment:
        # Temporal takes such a name from a worker and then never registers its version.
        raise VersioningError(
            f"deployment name {deployment!r} contains '.', which Temporal Worker "
            "Deployment names cannot: choose another WARMRUN_DEPLOYMENT, or set "
            "WARMRUN_VERSIONING=off"
        )
    return ReplicaVersion(
        deployment_name=worker_deployment_for(deployment),
        build_id=settings.build_id or default_build_id(pipeline),
        versioning=versioning,
    )


# --- the deployment's current version --------------------------------------------------


_LOOK_AGAIN = (
    RPCStatusCode.NOT_FOUND,  # no worker of this version (or deployment) has polled yet
    RPCStatusCode.FAILED_PRECONDITION,  # the deployment changed since it was described
    RPCStatusCode.RESOURCE_EXHAUSTED,  # "too many requests issued to Worker Deployment"
)


async def make_current(
    client: Client,
    version: ReplicaVersion,
    *,
    take_over: bool,
    timeout: float = PROMOTE_TIMEOUT,
) -> Promotion:
    """Make this replica's version the deployment's current one, once its worker has
    polled. Without `take_over`, only a deployment that never had a current version
    gets one (the first replica of a new deployment); an operator's choice, including
    "unversioned", is kept. Setting the current version goes with the conflict token of
    the description it was decided on, so replicas starting at once settle on one."""
    deadline = time.monotonic() + timeout
    pause = 0.05
    while True:
        try:
            described = await client.workflow_service.describe_worker_deployment(
                DescribeWorkerDeploymentRequest(
                    namespace=client.namespace, deployment_name=version.deployment_name
                )
            )
            routing = described.worker_deployment_info.routing_config
            current = routing.current_deployment_version.build_id
            if current == version.build_id:
                logger.info("build %s is the current version", version.build_id)
                return Promotion.ALREADY_CURRENT
            if not take_over and routing.HasField("current_version_changed_time"):
                logger.info(
                    "build %s is not the current version of %s (%s is): new runs execute "
                    "there until this one is promoted",
                    version.build_id,
                    version.deployment_name,
                    current or "unversioned",
                )
                return Promotion.KEPT
            if _registered(described, version.build_id):
                previous = await _set_current(client, version, described.conflict_token)
                logger.info(
                    "build %s is now the current version of %s (was: %s)",
                    version.build_id,
                    version.deployment_name,
                    previous or "none",
                )
                return Promotion.PROMOTED
        except RPCError as err:
            if err.status not in _LOOK_AGAIN:
                raise
        if time.monotonic() > deadline:
            raise VersioningError(
                f"build {version.build_id} of Worker Deployment {version.deployment_name} "
                f"did not become current within {timeout:g}s (has its worker polled?); "
                f"make it current with `temporal worker deployment set-current-version "
                f"--deployment-name {version.deployment_name} --build-id {version.build_id}`"
            )
        await asyncio.sleep(pause)
        pause = min(pause * 2, 1.0)


def _registered(described: DescribeWorkerDeploymentResponse, build_id: str) -> bool:
    return any(
        summary.deployment_version.build_id == build_id
        for summary in described.worker_deployment_info.version_summaries
    )


async def _set_current(client: Client, version: ReplicaVersion, token: bytes) -> str:
    """The build id that was current before ("" for none)."""
    response = await client.workflow_service.set_worker_deployment_current_version(
        SetWorkerDeploymentCurrentVersionRequest(
            namespace=client.namespace,
            deployment_name=version.deployment_name,
            build_id=version.build_id,
            conflict_token=token,
            identity=PROMOTER_IDENTITY,
        )
    )
    return response.previous_deployment_version.build_id


# --- what operators and readers see ----------------------------------------------------

_DRAINED_STATUSES = (
    WorkerDeploymentVersionStatus.WORKER_DEPLOYMENT_VERSION_STATUS_DRAINED,
    WorkerDeploymentVersionStatus.WORKER_DEPLOYMENT_VERSION_STATUS_INACTIVE,
    WorkerDeploymentVersionStatus.WORKER_DEPLOYMENT_VERSION_STATUS_CREATED,
)


@dataclass(frozen=True)
class VersionState:
    """This replica's version as the Temporal server sees it."""

    current: bool
    """New runs start on this version."""
    drained: bool
    """Neither current nor ramping, and no open run is pinned to it: stopping its
    replicas strands no run. Temporal rechecks drainage every few minutes (and only
    after a grace period for visibility), so it turns true that much later."""


async def version_state(client: Client, version: ReplicaVersion) -> VersionState | None:
    """None while the server does not know the version (its worker has not polled)."""
    try:
        described = await client.workflow_service.describe_worker_deployment_version(
            DescribeWorkerDeploymentVersionRequest(
                namespace=client.namespace,
                deployment_version=VersionMessage(
                    deployment_name=version.deployment_name, build_id=version.build_id
                ),
            )
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    status = described.worker_deployment_version_info.status
    return VersionState(
        current=status == WorkerDeploymentVersionStatus.WORKER_DEPLOYMENT_VERSION_STATUS_CURRENT,
        drained=status in _DRAINED_STATUSES,
    )


class CurrentVersionCache:
    """Whether this replica's version is current, at most `max_age` seconds late.

    For eager workflow start: the server hands the first workflow task of an eagerly
    started run to the starting process's worker whatever its version, and the run is
    then pinned to it. So a replica may start runs eagerly only while its version is
    current: in the `max_age` after another version becomes current, a sync run accepted
    here still executes here, on the version that was current when it arrived."""

    def __init__(self, client: Client, version: ReplicaVersion, max_age: float = 1.0) -> None:
        self._client = client
        self._version = version
        self._max_age = max_age
        self._current = False
        self._checked_at = -max_age
        self._lock = asyncio.Lock()

    async def is_current(self) -> bool:
        if not self._version.versioned:
            return True
        if time.monotonic() - self._checked_at > self._max_age:
            async with self._lock:  # one look for all the requests that need it
                if time.monotonic() - self._checked_at > self._max_age:
                    try:
                        state = await version_state(self._client, self._version)
                    except RPCError:
                        logger.warning("could not read this version's state", exc_info=True)
                        state = None
                    self._current = state is not None and state.current
                    self._checked_at = time.monotonic()
        return self._current


@dataclass(frozen=True)
class RunVersion:
    """Which version a run executes on, from its description."""

    build_id: str | None
    """Null until a versioned worker first took the run (or for unversioned workers)."""
    pinned: bool


def run_version(info: WorkflowExecutionVersioningInfo) -> RunVersion:
    """The version a run is pinned to by an override (an operator moved it there, or it
    was started pinned: such a run may not have run on it yet), else the one it
    executes on."""
    override = info.versioning_override
    pinned_to = override.pinned.version.build_id if override.HasField("pinned") else ""
    build_id = pinned_to or info.deployment_version.build_id or None
    pinned = bool(pinned_to) or (
        not override.HasField("auto_upgrade")
        and info.behavior == BehaviorMessage.VERSIONING_BEHAVIOR_PINNED
    )
    return RunVersion(build_id=build_id, pinned=pinned)
