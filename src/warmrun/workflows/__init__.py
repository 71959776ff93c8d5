"""The durable state machine of a run: the `PipelineRun` workflow and its contract."""

from warmrun.workflows.contract import PipelineRunInput, PipelineRunResult, Progress
from warmrun.workflows.pipeline_run import PipelineRun

__all__ = ["PipelineRun", "PipelineRunInput", "PipelineRunResult", "Progress"]
