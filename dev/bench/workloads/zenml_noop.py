"""The ZenML benchmark's pipeline: three steps that do nothing (`python -m dev.bench_zenml`).

Every millisecond measured is ZenML's and the server's overhead, the same pipeline
behind ZenML's own local deployer and behind warmrun.
"""

from typing import Annotated

from zenml import pipeline, step


@step
def first(x: int) -> int:
    return x


@step
def second(x: int) -> int:
    return x + 1


@step
def third(x: int) -> Annotated[int, "result"]:
    return x * 2


@pipeline(enable_cache=False)
def noop_pipeline(x: int = 1):
    return third(second(first(x)))
