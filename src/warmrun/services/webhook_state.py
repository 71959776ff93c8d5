"""How a run's webhook delivery is going, read from its delivery workflow.

Each event is delivered by a `WarmrunWebhookDelivery` workflow of its own, whose ID
the run's id and the event name (`run.webhook_delivery_id`); its state is Temporal's:
pending activity and last failure while it retries, result or failure once done.
"""

from __future__ import annotations

from datetime import datetime

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from warmrun.resource import RunWebhook, WebhookDeliveryState
from warmrun.run import (
    TERMINAL_EVENTS,
    WEBHOOK_GONE_ERROR,
    WEBHOOK_REFUSED_ERROR,
    WEBHOOK_REJECTED_ERROR,
    DeliveryFailureDetails,
    RunStatus,
    WebhookDeliveryResult,
    WebhookEvent,
    webhook_delivery_id,
)

_FAILURE_STATES: dict[str, WebhookDeliveryState] = {
    WEBHOOK_GONE_ERROR: "gone",
    WEBHOOK_REJECTED_ERROR: "rejected",
    WEBHOOK_REFUSED_ERROR: "refused",
}
_STARTED_STATES = (
    PendingActivityState.PENDING_ACTIVITY_STATE_STARTED,
    PendingActivityState.PENDING_ACTIVITY_STATE_CANCEL_REQUESTED,
)


def main_event(status: RunStatus, events: list[str] | None) -> str | None:
    """The event a run's webhook state is about: its terminal one once it ended (if
    asked for), else `started` (if asked for)."""
    wanted = events or list(TERMINAL_EVENTS)
    if status.is_terminal and status in wanted:
        return status.value
    if WebhookEvent.STARTED in wanted:
        return WebhookEvent.STARTED.value
    return None


async def webhook_state(
    client: Client, run_id: str, status: RunStatus, url: str, events: list[str] | None
) -> RunWebhook:
    """The delivery state of the run's main event."""
    event = main_event(status, events)
    if event is None:
        return RunWebhook(url=url, event=None, state="pending")
    handle = client.get_workflow_handle(
        webhook_delivery_id(run_id, event), result_type=WebhookDeliveryResult
    )
    try:
        delivery = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:  # not handed over yet
            return RunWebhook(url=url, event=event, state="pending")
        raise
    if delivery.status == WorkflowExecutionStatus.RUNNING:
        state: WebhookDeliveryState = "pending"
        attempts, last_error = 0, None
        for pending in delivery.raw_description.pending_activities:
            started = pending.state in _STARTED_STATES
            attempts = pending.attempt - (0 if started else 1)
            last_error = pending.last_failure.message or None
            state = "retrying" if last_error else "delivering"
        return RunWebhook(
            url=url, event=event, state=state, attempts=attempts, last_error=last_error
        )
    try:
        result = await handle.result()
    except WorkflowFailureError as err:
        cause = err.cause
        if not isinstance(cause, ApplicationError):
            return RunWebhook(
                url=url, event=event, state="failed", last_error=str(cause) if cause else str(err)
            )
        details = DeliveryFailureDetails.from_details(cause.details)
        return RunWebhook(
            url=url,
            event=event,
            state=_FAILURE_STATES.get(cause.type or "", "failed"),
            attempts=details.attempts if details else 0,
            last_error=cause.message,
        )
    return RunWebhook(
        url=url,
        event=event,
        state="delivered",
        attempts=result.attempts,
        delivered_at=datetime.fromisoformat(result.delivered_at),
    )
