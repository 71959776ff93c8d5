"""Example pipeline: score the sentiment of a few texts with a tiny lexicon "model".

`init()` loads the model once per process (it takes a moment, like a real model);
every run then shares it through `ctx.state`. The run has named steps and reports
progress within the scoring step, so `GET /runs/{id}` and the Temporal UI show where
it is. `step_seconds` slows each step down so there is something to watch.
"""

from __future__ import annotations

import time

from pydantic import BaseModel, Field

from warmrun import RunContext

POSITIVE = {"good", "great", "love", "excellent", "happy", "fast", "nice", "wonderful"}
NEGATIVE = {"bad", "awful", "hate", "terrible", "sad", "slow", "broken", "poor"}


class Sentiment(BaseModel):
    text: str
    score: float = Field(description="Positive minus negative words, per word.")
    label: str


class Report(BaseModel):
    results: list[Sentiment]
    mean_score: float
    model_loaded_at: float


def init() -> dict:
    """Load the "model" once per warm process."""
    time.sleep(0.5)
    return {"positive": POSITIVE, "negative": NEGATIVE, "loaded_at": time.time()}


def cleanup(state: dict) -> None:
    state.clear()


def sentiment(
    ctx: RunContext,
    texts: list[str] = ["warmrun is great", "waiting on a proxy timeout is awful"],  # noqa: B006
    step_seconds: float = Field(1.0, ge=0, le=60),
) -> Report:
    ctx.steps_total = 3
    with ctx.step("tokenize"):
        tokens = [text.lower().split() for text in texts]
        time.sleep(step_seconds)

    results = []
    with ctx.step("score"):
        for index, (text, words) in enumerate(zip(texts, tokens, strict=True)):
            ctx.progress(message=f"scoring text {index + 1} of {len(texts)}")
            positive = sum(word in ctx.state["positive"] for word in words)
            negative = sum(word in ctx.state["negative"] for word in words)
            score = (positive - negative) / max(len(words), 1)
            label = "positive" if score > 0 else "negative" if score < 0 else "neutral"
            results.append(Sentiment(text=text, score=round(score, 3), label=label))
            time.sleep(step_seconds / max(len(texts), 1))

    with ctx.step("aggregate"):
        mean = sum(result.score for result in results) / max(len(results), 1)
        time.sleep(step_seconds)
        ctx.logger.info("scored %d texts, mean %.3f", len(results), mean)

    return Report(
        results=results, mean_score=round(mean, 3), model_loaded_at=ctx.state["loaded_at"]
    )
