"""`Deployment`: one deployment as this process serves it.

The one object the HTTP layer and the run services share: the pipeline, the
settings, the Temporal client, the backlog estimate, the run feeds of the event
streams, the worker (when this process executes runs) and whether the process is
draining. Everything a request needs about "where runs of this deployment live" (and
which version of it this replica is) is derived here, once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from temporalio.client import Client
from temporalio.worker import Worker

from warmrun.metrics import Metrics
from warmrun.pipeline import Pipeline
from warmrun.run import RunPolicy, task_queue_for, temporal_ui_url
from warmrun.services.backlog import Backlog
from warmrun.services.watch import RunFeeds
from warmrun.settings import Settings
from warmrun.versioning import CurrentVersionCache, ReplicaVersion, replica_version


@dataclass
class Deployment:
    pipeline: Pipeline
    settings: Settings
    client: Client
    backlog: Backlog
    metrics: Metrics
    worker: Worker | None = None
    draining: bool = False
    feeds: RunFeeds = field(init=False)

    def __post_init__(self) -> None:
        self.feeds = RunFeeds(self.settings.max_event_streams)

    @property
    def name(self) -> str:
        return self.settings.deployment_name(self.pipeline.name)

    @property
    def task_queue(self) -> str:
        return task_queue_for(self.name)

    @cached_property
    def version(self) -> ReplicaVersion:
        """The Worker Deployment version this replica's code is (its worker's, if it has one)."""
        return replica_version(self.pipeline, self.settings)

    @cached_property
    def _current_version(self) -> CurrentVersionCache:
        return CurrentVersionCache(self.client, self.version)

    async def may_start_eagerly(self) -> bool:
        """Eager start hands a run's first task to this process's worker, bypassing the
        routing to the current version: only while this version is current."""
        return self.worker is not None and await self._current_version.is_current()

    @property
    def namespace(self) -> str:
        return self.client.namespace

    @property
    def run_policy(self) -> RunPolicy:
        return self.settings.run_policy(self.pipeline.name)

    def temporal_ui_link(self, run_id: str) -> str:
        return temporal_ui_url(self.settings.temporal_ui_url, self.namespace, run_id)

    async def drain(self) -> None:
        """Stop taking runs; let in-flight ones finish within the worker's shutdown grace,
        then hand the rest back to Temporal."""
        self.draining = True
        if self.worker is not None:
            await self.worker.shutdown()
