"""Safe upgrades (SPEC §9): real `warmrun serve` processes running two versions of a
pipeline's code, a rolling upgrade with `--promote`, and SIGKILLs mid-run."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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

from warmrun.devserver import DevServer

pytestmark = pytest.mark.reliability

VERSIONED_PIPELINE = Path(__file__).resolve().parents[1] / "versioned_pipeline.py"
HEARTBEAT_TIMEOUT = 2.0
"""The replicas' (`replicas.FAST_FAILURE_DETECTION`): a killed replica's run is retried
this long after its last heartbeat."""


def code_version(tmp_path: Path, code: str) -> str:
    """A copy of the versioned pipeline whose code says `code`: another build."""
    source = VERSIONED_PIPELINE.read_text()
    assert 'CODE = "v1"' in source
    copy = tmp_path / code / "upgradable.py"
    copy.parent.mkdir(exist_ok=True)
    copy.write_text(source.replace('CODE = "v1"', f'CODE = "{code}"'))
    return f"{copy}:upgradable"


@pytest.fixture
def replicas(dev_server: DevServer, tmp_path: Path) -> Iterator[Callable[..., Replica]]:
    with replica_starter(dev_server.address, tmp_path) as start:
        yield start


async def get(replica: Replica, path: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as http:
        answer = await http.get(path)
    assert answer.status_code == 200, answer.text
    return answer.json()


def journal_entries(journal: Path) -> list[tuple[int, int, str]]:
    """`(step index, pid, code)` for each step that completed."""
    if not journal.exists():
        return []
    return [
        (int(index), int(pid), code)
        for index, pid, code in (line.split() for line in journal.read_text().splitlines())
    ]


async def steps_done(journal: Path, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(journal_entries(journal)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} steps done: {journal}"
        await asyncio.sleep(0.05)


async def test_a_promoted_version_takes_new_runs_while_runs_in_flight_end_on_theirs(
    replicas: Callable[..., Replica], tmp_path: Path
) -> None:
    v1 = await replicas(code_version(tmp_path, "v1"), deployment="rollout").ready()
    in_flight_journal, gate = tmp_path / "in-flight", tmp_path / "gate"
    # Held after its first step until v2 is up and checked: however long v2 takes to start.
    in_flight = await submit_journaled(v1, in_flight_journal, steps=4, gate=gate, gate_at=1)
    await steps_done(in_flight_journal, 1)

    v2 = await replicas(code_version(tmp_path, "v2"), deployment="rollout", promote=True).ready()

    info_v1, info_v2 = await get(v1, "/info"), await get(v2, "/info")
    assert info_v1["build_id"] != info_v2["build_id"]
    assert (info_v1["current"], info_v2["current"]) == (False, True)
    assert info_v1["drained"] is False  # the run in flight is pinned to it
    gate.touch()
    async with httpx.AsyncClient(timeout=30) as http:
        sync = await http.post(
            f"{v2.url}/invoke",
            json={"parameters": {"journal": str(tmp_path / "new-sync"), "steps": 1}},
        )
    # Accepted by the old replica, executed by the current version.
    accepted_by_v1 = await submit_journaled(v1, tmp_path / "new-async", steps=1, step_seconds=0)
    new_run = await poll_run(v1.url, accepted_by_v1, TERMINAL)
    ended = await poll_run(v2.url, in_flight, TERMINAL)

    assert sync.json()["success"] is True, sync.text
    assert sync.json()["outputs"]["code"] == "v2"
    sync_run = await get(v2, f"/runs/{sync.headers['X-Run-Id']}")
    assert sync_run["build_id"] == info_v2["build_id"]
    assert new_run["outputs"]["code"] == "v2"
    assert new_run["build_id"] == info_v2["build_id"]
    assert ended["status"] == "succeeded", ended
    assert ended["outputs"]["code"] == "v1"
    assert ended["build_id"] == info_v1["build_id"]
    assert {(code, pid) for _, pid, code in journal_entries(in_flight_journal)} == {("v1", v1.pid)}

    # No run is pinned to v1 any more: an operator may stop it (it stays ready meanwhile).
    deadline = time.monotonic() + 30
    while not (await get(v1, "/ready"))["drained"]:
        assert time.monotonic() < deadline, "v1 never reported drained"
        await asyncio.sleep(0.3)
    assert (await get(v1, "/info"))["drained"] is True


async def test_a_pinned_run_whose_replica_died_waits_for_its_own_build_then_resumes(
    replicas: Callable[..., Replica], tmp_path: Path
) -> None:
    v1_code = code_version(tmp_path, "v1")
    v1 = await replicas(v1_code, deployment="pinned-crash").ready()
    journal, gate = tmp_path / "journal", tmp_path / "gate"
    # Held after two steps: still in flight on v1 however long v2 takes to start.
    run_id = await submit_journaled(v1, journal, steps=5, gate=gate, gate_at=2)
    await steps_reported(v1, run_id, 2)
    v2 = replicas(code_version(tmp_path, "v2"), deployment="pinned-crash", promote=True)
    await v2.ready()
    v1_build = (await get(v1, "/info"))["build_id"]

    v1.signal(signal.SIGKILL)
    # Once its heartbeat times out, the retry waits for a worker of v1, not v2 (which,
    # if it were allowed to, would take it within a second).
    waiting = await poll_run(
        v2.url,
        run_id,
        {"queued"},
        timeout=HEARTBEAT_TIMEOUT + 10,
        until=lambda r: r["attempt"] >= 2,
    )
    assert waiting["build_id"] == v1_build
    assert v1_build in waiting["waiting_for"]
    watched_until = time.monotonic() + 3 * HEARTBEAT_TIMEOUT
    while time.monotonic() < watched_until:
        run = await get(v2, f"/runs/{run_id}")
        assert run["status"] == "queued", run
        await asyncio.sleep(0.2)
    assert {code for _, _, code in journal_entries(journal)} == {"v1"}

    gate.touch()
    restarted = await replicas(v1_code, deployment="pinned-crash").ready()
    run = await poll_run(v2.url, run_id, TERMINAL)

    assert run["status"] == "succeeded", run
    assert run["outputs"]["code"] == "v1"
    assert run["outputs"]["finished_by"] == restarted.pid
    assert run["build_id"] == v1_build
    entries = journal_entries(journal)
    assert {code for _, _, code in entries} == {"v1"}
    runs_per_step = Counter(index for index, _, _ in entries)
    assert sorted(runs_per_step) == [0, 1, 2, 3, 4]
    assert runs_per_step[0] == runs_per_step[1] == 1, entries  # resumed after its checkpoints


async def test_with_auto_upgrade_the_same_crash_resumes_on_the_current_version(
    replicas: Callable[..., Replica], tmp_path: Path
) -> None:
    v1 = await replicas(
        code_version(tmp_path, "v1"), deployment="auto-crash", versioning="auto-upgrade"
    ).ready()
    journal, gate = tmp_path / "journal", tmp_path / "gate"
    # Held after two steps: still in flight on v1 however long v2 takes to start.
    run_id = await submit_journaled(v1, journal, steps=5, step_seconds=0.5, gate=gate, gate_at=2)
    await steps_reported(v1, run_id, 2)
    v2 = await replicas(
        code_version(tmp_path, "v2"),
        deployment="auto-crash",
        versioning="auto-upgrade",
        promote=True,
    ).ready()
    v2_build = (await get(v2, "/info"))["build_id"]

    v1.signal(signal.SIGKILL)
    done_by_v1 = len(journal_entries(journal))
    gate.touch()
    run = await poll_run(v2.url, run_id, TERMINAL)

    assert run["status"] == "succeeded", run
    assert run["outputs"]["code"] == "v2", (run, journal_entries(journal))
    assert run["outputs"]["finished_by"] == v2.pid
    assert run["build_id"] == v2_build
    entries = journal_entries(journal)
    runs_per_step = Counter(index for index, _, _ in entries)
    assert runs_per_step[0] == runs_per_step[1] == 1, entries  # v1's checkpoints, read by v2
    # Every step completed after the kill ran v2's code.
    assert {code for _, _, code in entries[done_by_v1:]} == {"v2"}, entries
