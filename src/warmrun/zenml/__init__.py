"""Serving ZenML pipelines (`pip install 'warmrun[zenml]'`).

Imported only when a ZenML pipeline is served: `warmrun serve file.py:my_pipeline`
(the attribute is a ZenML `@pipeline`) or `warmrun serve zenml:DEPLOYMENT` (a
registered ZenML deployment), or when ZenML loads the deployer flavor. Plain warmrun
never imports zenml.

    pipeline.py         ZenMLPipeline: ZenML's parameters, schemas and answer, as a warmrun Pipeline
    runner.py           one warmrun run as one ZenML pipeline run, in the warm process
    deployer.py         WarmrunDeployerFlavor: `zenml pipeline deploy` starts `warmrun serve`
    temporal_server.py  the Temporal dev server the deployer's deployments share
    daemon.py           the detached processes the deployer starts, found again by pid
"""

from typing import Any

from warmrun.zenml.pipeline import ZenMLPipeline, load_deployment, serve_pipeline

DEPLOYER_NAMES = ("WarmrunDeployer", "WarmrunDeployerConfig", "WarmrunDeployerFlavor")

__all__ = ["ZenMLPipeline", "load_deployment", "serve_pipeline", *DEPLOYER_NAMES]


def __getattr__(name: str) -> Any:
    """The deployer flavor on first use (what `zenml deployer flavor register
    warmrun.zenml.WarmrunDeployerFlavor` loads): serving a pipeline does not import it."""
    if name in DEPLOYER_NAMES:
        from warmrun.zenml import deployer

        return getattr(deployer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
