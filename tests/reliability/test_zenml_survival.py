"""A ZenML pipeline's run survives its worker (SPEC §4 "worker lost", §8): real
`warmrun serve` processes, a real SIGKILL in the middle of a step, one ZenML store
shared by the processes, as replicas of one deployment share it in production."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from replicas import TERMINAL, Replica, poll_run, replica_starter

from warmrun.devserver import DevServer

pytestmark = pytest.mark.reliability

WORDS = "one two three four"


@pytest.fixture
def replicas(
    dev_server: DevServer, zenml_repo: Path, tmp_path: Path
) -> Iterator[Callable[..., Replica]]:
    """`replicas("text_pipeline", deployment="x")` starts a `warmrun serve` process of
    the tests' ZenML pipelines."""
    with replica_starter(dev_server.address, tmp_path) as start:
        yield lambda attribute, **settings: start(
            f"{zenml_repo / 'zenml_pipelines.py'}:{attribute}", **settings
        )


def journal_of(journal: Path) -> list[tuple[str, int]]:
    if not journal.exists():
        return []
    return [
        (step, int(pid))
        for step, pid in (line.split() for line in journal.read_text().splitlines())
    ]


async def kill_during(step: str, journal: Path, first: Replica, second: Replica) -> Replica:
    """SIGKILL whichever replica runs `step` once it has begun; the other survives."""
    for _ in range(600):
        running = [pid for name, pid in journal_of(journal) if name == step]
        if running:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"{step} never started: {journal_of(journal)}")
    await asyncio.sleep(0.3)  # well inside the step's 1.5 s
    victim, survivor = (first, second) if running[0] == first.pid else (second, first)
    victim.signal(signal.SIGKILL)
    return survivor


async def submit(replica: Replica, journal: Path) -> str:
    async with httpx.AsyncClient(base_url=replica.url, timeout=30) as http:
        answer = await http.post(
            "/invoke",
            json={
                "parameters": {"text": WORDS, "delay": 1.5, "journal": str(journal)},
                "async": True,
            },
        )
    assert answer.status_code == 202, answer.text
    return answer.json()["run_id"]


def zenml_runs_of(run_id: str) -> list[Any]:
    from zenml.client import Client

    runs = Client().list_pipeline_runs(orchestrator_run_id=run_id, sort_by="asc:created")
    return [Client().get_pipeline_run(run.id, hydrate=True) for run in runs.items]


def step_attempts(zenml_run: Any, step: str) -> list[str]:
    from zenml.client import Client

    attempts = Client().list_run_steps(
        pipeline_run_id=zenml_run.id, name=step, sort_by="asc:created"
    )
    return [attempt.status.value for attempt in attempts.items]


async def test_sigkill_mid_step_replays_the_zenml_run_without_redoing_finished_steps(
    replicas: Callable[..., Replica], tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    first = await replicas("text_pipeline", deployment="zenml-replay").ready()
    second = await replicas("text_pipeline", deployment="zenml-replay").ready()
    run_id = await submit(first, journal)
    survivor = await kill_during("count_tokens", journal, first, second)

    run = await poll_run(survivor.url, run_id, TERMINAL, timeout=120)

    assert run["status"] == "succeeded", run
    assert run["attempt"] == 2
    assert run["outputs"]["n_tokens"] == 4
    assert f"pid {survivor.pid}" in run["outputs"]["summary"]
    executions = Counter(step for step, _ in journal_of(journal))
    assert executions == {
        "tokenize": 1,
        "count_tokens": 2,
        "summarize": 1,
    }  # only the one in flight
    # The step had no retry left in ZenML's first run: the run goes on in a replay of it.
    lost, replay = zenml_runs_of(run_id)
    assert lost.status.value == "failed"
    assert "worker lost during step(s) count_tokens" in lost.body.status_reason
    assert {name: s.status.value for name, s in lost.steps.items()} == {
        "tokenize": "completed",
        "count_tokens": "failed",
    }
    assert replay.status.value == "completed"
    assert replay.original_run.id == lost.id
    assert replay.orchestrator_run_id == run_id
    assert replay.run_metadata["warmrun_run_id"] == run_id
    assert {name: s.status.value for name, s in replay.steps.items()} == {
        "tokenize": "skipped",
        "count_tokens": "completed",
        "summarize": "completed",
    }
    assert run["zenml_run_id"] == str(replay.id)


async def test_a_worker_lost_as_it_began_the_replay_leaves_it_to_the_next_attempt(
    replicas: Callable[..., Replica], tmp_path: Path
) -> None:
    """The attempt that closed the interrupted ZenML run for a replay may die before the
    replay exists: the next attempt finds a failed run and begins the replay, instead
    of failing the warmrun run for good."""
    from warmrun.zenml.runner import REPLAY_REASON, fail_for_replay

    journal = tmp_path / "journal"
    first = await replicas("text_pipeline", deployment="zenml-replay-lost").ready()
    run_id = await submit(first, journal)
    await kill_during("count_tokens", journal, first, first)
    assert await first.exit_code() == -signal.SIGKILL
    # What the dying attempt did before its end: the ZenML run closed for a replay.
    [interrupted] = zenml_runs_of(run_id)
    fail_for_replay(interrupted, ["count_tokens"], run_id)

    second = await replicas("text_pipeline", deployment="zenml-replay-lost").ready()
    run = await poll_run(second.url, run_id, TERMINAL, timeout=120)

    assert run["status"] == "succeeded", run
    assert run["outputs"]["n_tokens"] == 4
    assert Counter(step for step, _ in journal_of(journal)) == {
        "tokenize": 1,
        "count_tokens": 2,
        "summarize": 1,
    }
    lost, replay = zenml_runs_of(run_id)
    assert lost.status.value == "failed"
    assert lost.body.status_reason.startswith(REPLAY_REASON)
    assert replay.status.value == "completed"
    assert replay.original_run.id == lost.id
    assert replay.run_metadata["warmrun_run_id"] == run_id
    assert run["zenml_run_id"] == str(replay.id)


async def test_sigkill_mid_step_continues_the_same_zenml_run_when_the_step_may_retry(
    replicas: Callable[..., Replica], tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    first = await replicas("retried_text_pipeline", deployment="zenml-in-place").ready()
    second = await replicas("retried_text_pipeline", deployment="zenml-in-place").ready()
    run_id = await submit(first, journal)
    survivor = await kill_during("count_tokens", journal, first, second)

    run = await poll_run(survivor.url, run_id, TERMINAL, timeout=120)

    assert run["status"] == "succeeded", run
    assert run["attempt"] == 2
    assert run["outputs"]["n_tokens"] == 4
    executions = Counter(step for step, _ in journal_of(journal))
    assert executions == {"tokenize": 1, "count_tokens": 2, "summarize": 1}
    [zenml] = zenml_runs_of(run_id)
    assert zenml.status.value == "completed"
    assert str(zenml.id) == run["zenml_run_id"]
    assert step_attempts(zenml, "tokenize") == ["completed"]
    assert step_attempts(zenml, "count_tokens")[-1] == "completed"
    assert len(step_attempts(zenml, "count_tokens")) == 2


async def test_a_run_temporal_gives_up_on_leaves_no_zenml_run_running(
    replicas: Callable[..., Replica], tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    first = await replicas("text_pipeline", deployment="zenml-lost", max_attempts=1).ready()
    second = await replicas("text_pipeline", deployment="zenml-lost", max_attempts=1).ready()
    run_id = await submit(first, journal)
    survivor = await kill_during("count_tokens", journal, first, second)

    run = await poll_run(survivor.url, run_id, TERMINAL, timeout=120)

    assert run["status"] == "failed", run
    assert run["error"]["type"] == "WorkerLost"
    for _ in range(100):  # the workflow closes the ZenML run after the run's failure
        [zenml] = zenml_runs_of(run_id)
        if zenml.status.is_finished:
            break
        await asyncio.sleep(0.2)
    assert zenml.status.value == "failed", zenml.status
    assert all(step.status.is_finished for step in zenml.steps.values())
    assert "warmrun" in (zenml.body.status_reason or "")


async def test_sigterm_mid_step_hands_the_run_over_and_its_zenml_run_goes_on(
    replicas: Callable[..., Replica], tmp_path: Path
) -> None:
    """A drain (SIGTERM, as a re-deploy sends) whose grace ends mid-step: the step in
    flight finishes there, the ZenML run stays open, the next attempt continues it."""
    journal = tmp_path / "journal"
    first = await replicas("text_pipeline", deployment="zenml-drain", shutdown_grace=0.2).ready()
    second = await replicas("text_pipeline", deployment="zenml-drain", shutdown_grace=0.2).ready()
    run_id = await submit(first, journal)
    for _ in range(600):
        running = [pid for name, pid in journal_of(journal) if name == "count_tokens"]
        if running:
            break
        await asyncio.sleep(0.05)
    assert running, "count_tokens never started"
    leaving, survivor = (first, second) if running[0] == first.pid else (second, first)
    leaving.signal(signal.SIGTERM)

    assert await leaving.exit_code() == 0
    run = await poll_run(survivor.url, run_id, TERMINAL, timeout=120)

    assert run["status"] == "succeeded", run
    assert run["attempt"] == 2
    assert run["outputs"]["n_tokens"] == 4
    assert journal_of(journal) == [
        ("tokenize", leaving.pid),
        ("count_tokens", leaving.pid),
        ("summarize", survivor.pid),
    ]  # nothing ran twice
    [zenml] = zenml_runs_of(run_id)
    assert zenml.status.value == "completed"
    assert str(zenml.id) == run["zenml_run_id"]
    assert {name: step.status.value for name, step in zenml.steps.items()} == {
        "tokenize": "completed",
        "count_tokens": "completed",
        "summarize": "completed",
    }
