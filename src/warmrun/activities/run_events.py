"""`started` and `progress` webhook events, sent from the executing activity.

Only the activity sees the pipeline start and advance, so it starts their delivery
workflows itself (through its Temporal client): one per event, with a stable workflow
ID so a retried attempt never sends an event twice. Progress events are throttled.
Failing to hand over an event is logged, never allowed to fail the run.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from temporalio import activity
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from warmrun.run import (
    WEBHOOK_WORKFLOW_TYPE,
    Progress,
    RunPipelineInput,
    RunStatus,
    WebhookDeliveryInput,
    WebhookEvent,
    run_payload,
    webhook_delivery_id,
    webhook_delivery_summary,
)
from warmrun.settings import Settings

PROGRESS_EVENT_INTERVAL = 1.0
"""At most one `progress` event per second per run."""

logger = logging.getLogger(__name__)


class RunEventSender:
    def __init__(self, input: RunPipelineInput, settings: Settings, pipeline_name: str) -> None:
        self._url = input.callback_url
        self._events = set(input.callback_events or ())
        self._settings = settings
        self._run_name = input.run_name
        self._pipeline_name = pipeline_name
        self._last_progress: Progress | None = None
        self._last_progress_at = -float("inf")
        self._progress_sent = 0

    def wants(self, event: str) -> bool:
        return bool(self._url) and event in self._events

    async def started(self, progress: Progress) -> None:
        if self.wants(WebhookEvent.STARTED):
            await self._send(WebhookEvent.STARTED, progress)

    async def progress(self, progress: Progress) -> None:
        if not self.wants(WebhookEvent.PROGRESS) or progress == self._last_progress:
            return
        if time.monotonic() - self._last_progress_at < PROGRESS_EVENT_INTERVAL:
            return
        self._last_progress, self._last_progress_at = progress, time.monotonic()
        self._progress_sent += 1
        await self._send(WebhookEvent.PROGRESS, progress, sequence=self._progress_sent)

    async def _send(
        self, event: WebhookEvent, progress: Progress, sequence: int | None = None
    ) -> None:
        info = activity.info()
        if sequence is not None:
            sequence = info.attempt * 100_000 + sequence  # unique across attempts
        delivery_id = webhook_delivery_id(info.workflow_id, event, sequence)
        settings = self._settings
        assert self._url is not None
        try:
            await activity.client().start_workflow(
                WEBHOOK_WORKFLOW_TYPE,
                WebhookDeliveryInput(
                    url=self._url,
                    event=event,
                    message_id=delivery_id,
                    payload=self._payload(progress),
                    retry_window=settings.webhook_retry_window,
                    max_interval=settings.webhook_max_interval,
                    attempt_timeout=settings.webhook_attempt_timeout,
                ),
                id=delivery_id,
                task_queue=info.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                static_summary=webhook_delivery_summary(info.workflow_id, event),
            )
        except WorkflowAlreadyStartedError:
            pass  # sent by an earlier attempt
        except Exception:
            logger.warning(
                "could not hand over the %s webhook of run %s",
                event,
                info.workflow_id,
                exc_info=True,
            )

    def _payload(self, progress: Progress) -> dict[str, Any]:
        info = activity.info()
        return run_payload(
            run_id=info.workflow_id,
            run_name=self._run_name,
            pipeline_name=self._pipeline_name,
            task_queue=info.task_queue,
            status=RunStatus.RUNNING,
            progress=progress,
            started_at=info.started_time.isoformat(),
            attempt=info.attempt,
        )
