"""Side effects of runs: executing the pipeline in the warm process, sending webhooks."""

from warmrun.activities.deliver_webhook import WebhookActivities
from warmrun.activities.run_pipeline import PipelineActivities

__all__ = ["PipelineActivities", "WebhookActivities"]
