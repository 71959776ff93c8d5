"""Side effects of a run: executing the pipeline in the warm process."""

from warmrun.activities.run_pipeline import PipelineActivities

__all__ = ["PipelineActivities"]
