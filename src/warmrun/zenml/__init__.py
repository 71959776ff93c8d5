"""Serving ZenML pipelines (`pip install 'warmrun[zenml]'`).

Imported only when a ZenML pipeline is served: `warmrun serve file.py:my_pipeline`
(the attribute is a ZenML `@pipeline`) or `warmrun serve zenml:DEPLOYMENT` (a
registered ZenML deployment). Plain warmrun never imports zenml.

    pipeline.py   ZenMLPipeline: ZenML's parameters, schemas and answer, as a warmrun Pipeline
    runner.py     one warmrun run as one ZenML pipeline run, in the warm process
"""

from warmrun.zenml.pipeline import ZenMLPipeline, load_deployment, serve_pipeline

__all__ = ["ZenMLPipeline", "load_deployment", "serve_pipeline"]
