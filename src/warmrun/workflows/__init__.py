"""The durable state machines: a run (`PipelineRun`) and one webhook event's delivery.

Their inputs, results and names are the run contract, `warmrun.run`.
"""

from warmrun.workflows.pipeline_run import PipelineRun
from warmrun.workflows.webhook_delivery import WebhookDelivery

__all__ = ["PipelineRun", "WebhookDelivery"]
