"""RunContext's resume logic: which steps a resumed attempt skips, and what they return.

Plain Python: the checkpoints' trip through Temporal is covered by the reliability
suite (SIGKILL) and by test_runs (RetryableError)."""

from __future__ import annotations

from pydantic import BaseModel

from warmrun import RunContext


class Scores(BaseModel):
    values: list[int]


def run_chunks(context: RunContext, calls: list[str]) -> list[int]:
    def chunk(index: int) -> int:
        calls.append(f"chunk-{index}")
        return index * 10

    def scores() -> Scores:
        calls.append("scores")
        return Scores(values=[1, 2])

    with context.step("load"):
        calls.append("load")
    results = [context.step("chunk", chunk, index) for index in range(3)]
    assert context.step("scores", scores) == Scores(values=[1, 2])
    return results


def test_a_resumed_attempt_skips_checkpointed_steps_and_returns_their_results() -> None:
    first = RunContext("run-1")
    first_calls: list[str] = []
    assert run_chunks(first, first_calls) == [0, 10, 20]
    lost_after = first.checkpoints()[:3]  # the worker died during chunk 2

    resumed = RunContext("run-1", attempt=2, resume_from=lost_after)
    calls: list[str] = []

    assert run_chunks(resumed, calls) == [0, 10, 20]
    assert calls == ["load", "chunk-2", "scores"]  # the block runs again; chunks 0-1 do not
    assert resumed.snapshot().steps_completed == 5


def test_results_are_rebuilt_as_the_return_annotation_says() -> None:
    first = RunContext("run-1")
    run_chunks(first, [])
    resumed = RunContext("run-1", attempt=2, resume_from=first.checkpoints())
    calls: list[str] = []

    run_chunks(resumed, calls)  # asserts the restored Scores equals a Scores model

    assert calls == ["load"]


def test_a_different_path_stops_resuming() -> None:
    first = RunContext("run-1")
    first.step("a", lambda: 1)
    first.step("b", lambda: 2)
    resumed = RunContext("run-1", attempt=2, resume_from=first.checkpoints())
    calls: list[str] = []

    resumed.step("a", lambda: calls.append("a") or 1)
    resumed.step("c", lambda: calls.append("c") or 3)
    resumed.step("b", lambda: calls.append("b") or 2)

    assert calls == ["c", "b"]
