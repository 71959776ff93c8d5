"""What survives what (SPEC §4 "worker lost"): real processes, real signals, a real
Temporal dev server that is stopped and restarted on the same SQLite file."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from replicas import (
    TERMINAL,
    Replica,
    poll_run,
    replica_starter,
    steps_reported,
    submit_journaled,
)
from temporalio.client import Client

from warmrun.devserver import DevServer, free_port

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
async def temporal(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevServer]:
    """A dev server of this module's own, which tests may stop and restart."""
    server = DevServer(
        port=free_port(),
        ui_port=None,
        log_level="error",
        db_file=tmp_path_factory.mktemp("reliability") / "temporal.sqlite",
    )
    async with server:
        yield server


@pytest.fixture
def replicas(temporal: DevServer, tmp_path: Path) -> Iterator[Callable[..., Replica]]:
    """`replicas("journaled", deployment="x")` starts a `warmrun serve` process."""
    with replica_starter(temporal.address, tmp_path) as start:
        yield start


def journal_entries(journal: Path) -> list[tuple[int, int]]:
    if not journal.exists():
        return []
    return [
        (int(index), int(pid))
        for index, pid in (line.split() for line in journal.read_text().splitlines())
    ]


async def test_sigkill_mid_run_resumes_on_another_replica_without_redoing_steps(
    replicas: Callable[..., Replica], tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    first = await replicas("journaled", deployment="resume").ready()
    second = await replicas("journaled", deployment="resume").ready()
    gate = tmp_path / "gate"
    # Held after two steps until the kill: the retry resumes from their checkpoints.
    run_id = await submit_journaled(first, journal, steps=5, gate=gate, gate_at=2)
    await steps_reported(first, run_id, 2)
    executing_pid = journal_entries(journal)[-1][1]
    victim, survivor = (first, second) if executing_pid == first.pid else (second, first)
    victim.signal(signal.SIGKILL)
    gate.touch()

    run = await poll_run(survivor.url, run_id, TERMINAL)

    assert run["status"] == "succeeded", run
    assert run["attempt"] == 2
    entries = journal_entries(journal)
    runs_per_step = Counter(index for index, _ in entries)
    assert sorted(runs_per_step) == [0, 1, 2, 3, 4]
    assert runs_per_step[0] == runs_per_step[1] == 1, entries  # checkpointed: not redone
    assert sum(count - 1 for count in runs_per_step.values()) <= 1  # at most the in-flight one
    assert {pid for index, pid in entries if index >= 3} == {survivor.pid}
    assert run["outputs"]["finished_by"] == survivor.pid
    assert [step["index"] for step in run["outputs"]["steps"]] == [0, 1, 2, 3, 4]


async def test_sigterm_drains_in_flight_runs_and_refuses_new_ones(
    replicas: Callable[..., Replica],
) -> None:
    replica = await replicas("whoami", deployment="drain", shutdown_grace=20).ready()
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as http:
        answer = await http.post("/invoke", json={"parameters": {"seconds": 3}, "async": True})
        run_id = answer.json()["run_id"]
        await asyncio.sleep(0.5)

        replica.signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        refused = await http.post("/invoke", json={"parameters": {}})
        ready = await http.get("/ready")
        still_readable = await http.get(f"/runs/{run_id}")

    assert refused.status_code == 503
    assert refused.json()["code"] == "shutting_down"
    assert int(refused.headers["Retry-After"]) >= 1
    assert ready.status_code == 503
    assert ready.json()["draining"] is True
    assert ready.json()["detail"] == "this replica is shutting down"
    assert still_readable.json()["status"] == "running"
    assert await replica.exit_code() == 0
    # The run finished inside the grace period, on the draining replica.
    other = await replicas("whoami", deployment="drain").ready()
    run = await poll_run(other.url, run_id, TERMINAL)
    assert run["status"] == "succeeded"
    assert run["attempt"] == 1
    assert run["outputs"]["pid"] == replica.pid


async def test_runs_outliving_the_grace_period_are_handed_to_another_replica(
    replicas: Callable[..., Replica], tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    gate = tmp_path / "gate"
    leaving = await replicas("journaled", deployment="handover", shutdown_grace=1).ready()
    # Held after its first step, still in flight however long `staying` takes to start.
    run_id = await submit_journaled(
        leaving, journal, steps=4, step_seconds=1.5, gate=gate, gate_at=1
    )
    staying = await replicas("journaled", deployment="handover").ready()
    while not journal_entries(journal):
        await asyncio.sleep(0.05)

    leaving.signal(signal.SIGTERM)
    # Its second step begins now and outlives the 1 s grace; sync code stops at the step's
    # end (a thread cannot be interrupted), then the run is handed over.
    gate.touch()
    assert await leaving.exit_code() == 0
    run = await poll_run(staying.url, run_id, TERMINAL)

    assert run["status"] == "succeeded", run
    assert run["attempt"] >= 2
    assert run["outputs"]["finished_by"] == staying.pid
    assert Counter(index for index, _ in journal_entries(journal))[0] == 1


async def test_temporal_outage_answers_503_and_runs_complete_after_restart(
    replicas: Callable[..., Replica], temporal: DevServer, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    replica = await replicas("journaled", deployment="outage").ready()
    run_id = await submit_journaled(replica, journal, steps=4, step_seconds=1.0)
    async with httpx.AsyncClient(base_url=replica.url, timeout=30) as http:
        while not journal_entries(journal):
            await asyncio.sleep(0.05)

        temporal.stop()
        try:
            for method, path, body in (
                ("GET", f"/runs/{run_id}", None),
                ("POST", "/invoke", {"parameters": {"journal": str(journal)}, "async": True}),
                ("DELETE", "/runs/unknown", None),
            ):
                started = time.monotonic()
                down = await http.request(method, path, json=body)
                assert down.status_code == 503, (method, path, down.text)
                assert down.json()["code"] == "temporal_unavailable"
                assert int(down.headers["Retry-After"]) >= 1
                assert time.monotonic() - started < 8, "answered too slowly while Temporal is down"
            unready = await http.get("/ready")
            assert unready.status_code == 503
            assert unready.json()["temporal"] is False
            assert unready.json()["detail"].startswith("Temporal health check failed:")
            assert (await http.get("/health")).status_code == 200
        finally:
            temporal.start()
            await temporal.wait_ready()

        run = await poll_run(replica.url, run_id, TERMINAL, timeout=90)
        assert run["status"] == "succeeded", run
        after = await http.post("/invoke", json={"parameters": {"journal": str(journal)}})
        assert after.status_code == 200
        assert after.json()["success"] is True


async def test_replicas_share_the_work_and_answer_for_every_run(
    replicas: Callable[..., Replica],
) -> None:
    fleet = [
        await replicas("whoami", deployment="fleet", max_concurrent_runs=2).ready()
        for _ in range(3)
    ]
    async with httpx.AsyncClient(timeout=30) as http:
        accepted = await asyncio.gather(
            *(
                http.post(
                    f"{fleet[i % 3].url}/invoke",
                    json={"parameters": {"seconds": 0.3}, "async": True},
                )
                for i in range(24)
            )
        )
        run_ids = [answer.json()["run_id"] for answer in accepted]
        runs = [await poll_run(fleet[0].url, run_id, TERMINAL) for run_id in run_ids]
        for replica in fleet[1:]:
            for run_id in run_ids[:5]:
                assert (await http.get(f"{replica.url}/runs/{run_id}")).status_code == 200

    assert {run["status"] for run in runs} == {"succeeded"}
    executed_by = Counter(run["outputs"]["pid"] for run in runs)
    assert set(executed_by) <= {replica.pid for replica in fleet}
    assert len(executed_by) >= 2, executed_by


async def test_a_burst_of_1000_async_invocations_loses_and_duplicates_nothing(
    dev_server: DevServer, temporal_client: Client, tmp_path: Path
) -> None:
    # On the session's in-memory server: this measures warmrun, not SQLite fsyncs.
    replica = Replica(
        "echo",
        deployment="burst",
        temporal_address=dev_server.address,
        log_dir=tmp_path,
        max_pending_runs=5000,
        max_concurrent_runs=32,
    ).start()
    try:
        await replica.ready()
        try:
            await _burst(replica, temporal_client)
        except httpx.HTTPError as err:
            assert replica.process is not None
            raise AssertionError(
                f"{err!r}; replica exit code {replica.process.poll()}:\n{replica.tail()}"
            ) from err
    finally:
        replica.stop()


async def _burst(replica: Replica, temporal_client: Client) -> None:
    total, clients = 1000, 64
    statuses: Counter[int] = Counter()
    run_ids: list[str] = []
    started = time.monotonic()
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=replica.url, timeout=60, limits=limits) as http:
        indexes = iter(range(total))

        async def client() -> None:
            for index in indexes:
                answer = await http.post(
                    "/invoke", json={"parameters": {"count": index}, "async": True}
                )
                statuses[answer.status_code] += 1
                if answer.status_code == 202:
                    run_ids.append(answer.json()["run_id"])

        await asyncio.gather(*(client() for _ in range(clients)))
        accepted_in = time.monotonic() - started

        # Temporal's own record, not ours: every accepted run_id is a completed workflow.
        query = "TaskQueue = 'warmrun-burst' AND ExecutionStatus = 'Completed'"
        while (await temporal_client.count_workflows(query)).count < len(run_ids):
            assert time.monotonic() - started < 240, "runs did not all complete"
            await asyncio.sleep(0.5)
        finished_in = time.monotonic() - started
        completed = {execution.id async for execution in temporal_client.list_workflows(query)}
        sample = [(await http.get(f"/runs/{run_id}")).json() for run_id in run_ids[:: total // 20]]

    print(
        f"\nburst: {total} invocations from {clients} clients: answers {dict(statuses)}; "
        f"accepted in {accepted_in:.1f}s ({total / accepted_in:.0f}/s); "
        f"all runs completed after {finished_in:.1f}s ({total / finished_in:.0f} runs/s)"
    )
    assert statuses == Counter({202: total})
    assert len(set(run_ids)) == total
    assert completed == set(run_ids)
    assert {run["status"] for run in sample} == {"succeeded"}


async def test_a_second_signal_exits_at_once_and_the_run_resumes_elsewhere(
    replicas: Callable[..., Replica], tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    gate = tmp_path / "gate"
    leaving = await replicas("journaled", deployment="impatient", shutdown_grace=60).ready()
    # Held after its first step: still in flight however long `staying` takes to start.
    run_id = await submit_journaled(leaving, journal, steps=3, gate=gate, gate_at=1)
    staying = await replicas("journaled", deployment="impatient").ready()
    while not journal_entries(journal):
        await asyncio.sleep(0.05)

    leaving.signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    started = time.monotonic()
    leaving.signal(signal.SIGTERM)

    assert await leaving.exit_code(timeout=10) == 1
    assert time.monotonic() - started < 5  # not the 60 s grace
    gate.touch()
    run = await poll_run(staying.url, run_id, TERMINAL)
    assert run["status"] == "succeeded"
    assert run["outputs"]["finished_by"] == staying.pid
