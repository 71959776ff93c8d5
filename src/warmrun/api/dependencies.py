"""What routes share, handed out through `Depends`: the deployment and its client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from temporalio.client import Client
from temporalio.worker import Worker

from warmrun.api.backpressure import Backlog
from warmrun.metrics import Metrics
from warmrun.pipeline import Pipeline
from warmrun.settings import Settings
from warmrun.workflows.contract import RunPolicy, task_queue_for


@dataclass
class Deployment:
    """One deployment as this process serves it: pipeline, settings, Temporal client."""

    pipeline: Pipeline
    settings: Settings
    client: Client
    backlog: Backlog
    metrics: Metrics
    worker: Worker | None = None
    draining: bool = False
    sdk_metrics_url: str | None = None

    @property
    def name(self) -> str:
        return self.settings.deployment_name(self.pipeline.name)

    @property
    def task_queue(self) -> str:
        return task_queue_for(self.name)

    @property
    def namespace(self) -> str:
        return self.client.namespace

    @property
    def run_policy(self) -> RunPolicy:
        return self.settings.run_policy(self.pipeline.name)

    async def drain(self) -> None:
        """Stop taking runs; let in-flight ones finish within the worker's shutdown grace,
        then hand the rest back to Temporal."""
        self.draining = True
        if self.worker is not None:
            await self.worker.shutdown()

    def temporal_ui_link(self, run_id: str) -> str:
        base = self.settings.temporal_ui_url.rstrip("/")
        return f"{base}/namespaces/{self.namespace}/workflows/{run_id}"


async def get_deployment(request: Request) -> Deployment:
    """`async def`: a plain function dependency would cost a thread-pool hop per request."""
    return request.app.state.deployment


DeploymentDep = Annotated[Deployment, Depends(get_deployment)]
