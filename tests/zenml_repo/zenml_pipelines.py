"""ZenML pipelines the tests serve: real `@pipeline`s, unchanged by warmrun.

`text_pipeline` has three steps, ZenML-named outputs (`Annotated[int, "n_tokens"]`),
an `on_init` whose state the steps share and an `on_cleanup`. `delay` makes each step
sleep, `fail_at` makes one step raise, and each step appends "<step> <pid>" to
`journal` when it starts, so a test counts executions across processes. `gate` holds
the first step until that file exists (a test decides when a run may go on).
"""

import os
import time
from pathlib import Path
from typing import Annotated, Any

from zenml import get_step_context, pipeline, step
from zenml.config.retry_config import StepRetryConfig

INIT_CALLS: list[int] = []


def warm_up(greeting: str = "hi") -> dict[str, Any]:
    INIT_CALLS.append(os.getpid())
    return {"pid": os.getpid(), "greeting": greeting, "runs": 0, "init_calls": len(INIT_CALLS)}


def cool_down() -> None:
    marker = os.environ.get("ZENML_TEST_CLEANUP_FILE")
    if marker:
        Path(marker).write_text(f"cleaned up {os.getpid()}\n")


def _journal(journal: str, name: str) -> None:
    if journal:
        with open(journal, "a") as out:
            out.write(f"{name} {os.getpid()}\n")


GATE_TIMEOUT = 120.0


@step
def tokenize(
    text: str, delay: float = 0.0, fail_at: str = "", journal: str = "", gate: str = ""
) -> list[str]:
    _journal(journal, "tokenize")
    deadline = time.monotonic() + GATE_TIMEOUT
    while gate and not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    if fail_at == "tokenize":
        raise ValueError("tokenize was told to fail")
    return text.split()


@step
def count_tokens(
    tokens: list[str], delay: float = 0.0, fail_at: str = "", journal: str = ""
) -> Annotated[int, "n_tokens"]:
    _journal(journal, "count_tokens")
    time.sleep(delay)
    if fail_at == "count_tokens":
        raise ValueError("count_tokens was told to fail")
    return len(tokens)


@step
def summarize(
    n: int, delay: float = 0.0, fail_at: str = "", journal: str = ""
) -> Annotated[str, "summary"]:
    _journal(journal, "summarize")
    time.sleep(delay)
    if fail_at == "summarize":
        raise ValueError("summarize was told to fail")
    state = get_step_context().pipeline_state
    state["runs"] += 1
    return (
        f"{state['greeting']}: {n} tokens (pid {state['pid']}, init calls "
        f"{state['init_calls']}, run #{state['runs']} of this process)"
    )


@pipeline(
    on_init=warm_up, on_init_kwargs={"greeting": "warm"}, on_cleanup=cool_down, enable_cache=False
)
def text_pipeline(
    text: str = "the quick brown fox",
    delay: float = 0.0,
    fail_at: str = "",
    journal: str = "",
    gate: str = "",
):
    tokens = tokenize(text=text, delay=delay, fail_at=fail_at, journal=journal, gate=gate)
    n = count_tokens(tokens, delay=delay, fail_at=fail_at, journal=journal)
    summary = summarize(n, delay=delay, fail_at=fail_at, journal=journal)
    return n, summary


retried_text_pipeline = text_pipeline.with_options(retry=StepRetryConfig(max_retries=1))
"""The same pipeline whose steps may run once more: a lost step continues in place."""
