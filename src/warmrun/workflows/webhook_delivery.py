"""`WarmrunWebhookDelivery`: one webhook event, delivered and retried by Temporal.

A workflow of its own (started as an abandoned child of the run, or by the run's
activity for `started`/`progress`) so that retrying a slow receiver for hours never
keeps the run itself open, and a failed delivery never changes the run's status.

Its code is warmrun's, not the pipeline's, and its input carries everything it sends,
so it auto-upgrades whatever the deployment's versioning: a delivery retried for hours
moves to the current version at its next attempt and never keeps an old version from
draining.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, VersioningBehavior
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from warmrun.activities.deliver_webhook import WebhookActivities
    from warmrun.run import (
        WEBHOOK_GONE_ERROR,
        WEBHOOK_REFUSED_ERROR,
        WEBHOOK_REJECTED_ERROR,
        WEBHOOK_UNDELIVERED_ERROR,
        WEBHOOK_WORKFLOW_TYPE,
        WebhookDeliveryInput,
        WebhookDeliveryResult,
    )


@workflow.defn(name=WEBHOOK_WORKFLOW_TYPE, versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class WebhookDelivery:
    @workflow.run
    async def run(self, input: WebhookDeliveryInput) -> WebhookDeliveryResult:
        workflow.set_current_details(f"Delivering `{input.event}` to {input.url}")
        try:
            return await workflow.execute_activity_method(
                WebhookActivities.deliver_webhook,
                input,
                schedule_to_close_timeout=timedelta(seconds=input.retry_window),
                start_to_close_timeout=timedelta(seconds=input.attempt_timeout + 5),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    backoff_coefficient=2.0,
                    maximum_interval=timedelta(seconds=input.max_interval),
                    non_retryable_error_types=[
                        WEBHOOK_GONE_ERROR,
                        WEBHOOK_REJECTED_ERROR,
                        WEBHOOK_REFUSED_ERROR,
                    ],
                ),
                summary=f"{input.event} → {input.url}",
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError):
                raise ApplicationError(
                    cause.message, *cause.details, type=cause.type, non_retryable=True
                ) from None
            message = cause.message if cause is not None else err.message
            raise ApplicationError(
                f"gave up: {message}", type=WEBHOOK_UNDELIVERED_ERROR, non_retryable=True
            ) from None
