"""A ZenML pipeline, served by warmrun unchanged (`pip install 'warmrun[zenml]'`).

    zenml init                                        # once, in this folder
    warmrun dev examples/zenml_pipeline.py:review_pipeline

Three steps, ZenML-named outputs (`Annotated[..., "name"]` is the key in `outputs`),
and an `on_init` hook whose state every run in the process shares: warmrun runs it
once per process, like ZenML's own deployment server, and `on_cleanup` at shutdown.
Nothing here imports warmrun.
"""

import time
from typing import Annotated, Any

from zenml import get_step_context, pipeline, step

POSITIVE = {"good", "great", "love", "excellent", "fast", "happy"}
NEGATIVE = {"bad", "awful", "hate", "slow", "broken", "sad"}


def load_lexicon() -> dict[str, Any]:
    """Stands for loading a model: slow once, then shared by every run."""
    time.sleep(0.5)
    return {"positive": POSITIVE, "negative": NEGATIVE, "loaded_at": time.time(), "runs": 0}


def release_lexicon() -> None:
    print("review_pipeline: lexicon released")


@step
def tokenize(review: str, pause: float = 0.0) -> list[str]:
    time.sleep(pause)
    return [word.strip(".,!?").lower() for word in review.split()]


@step
def score(tokens: list[str], pause: float = 0.0) -> Annotated[float, "score"]:
    time.sleep(pause)
    lexicon = get_step_context().pipeline_state
    lexicon["runs"] += 1
    hits = sum(t in lexicon["positive"] for t in tokens) - sum(
        t in lexicon["negative"] for t in tokens
    )
    return max(-1.0, min(1.0, hits / max(len(tokens), 1) * 4))


@step
def label(value: float, pause: float = 0.0) -> Annotated[str, "label"]:
    time.sleep(pause)
    return "positive" if value > 0.1 else "negative" if value < -0.1 else "neutral"


@pipeline(on_init=load_lexicon, on_cleanup=release_lexicon, enable_cache=False)
def review_pipeline(review: str = "Great product, fast delivery!", pause: float = 0.0):
    tokens = tokenize(review=review, pause=pause)
    value = score(tokens, pause=pause)
    return value, label(value, pause=pause)
