"""Versions of a deployment (SPEC §9): build ids, the current version, pinned runs.

In one process here; tests/reliability/test_upgrades.py has the rolling upgrade and
crashes with real `warmrun serve` processes running different code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import PinnedVersioningOverride, WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode

from conftest import PIPELINES, ServeFn, submit, wait_for_status
from test_temporal_native import temporal_cli
from warmrun.devserver import DevServer
from warmrun.pipeline import load_pipeline
from warmrun.run import PipelineRunInput, task_queue_for, worker_deployment_for
from warmrun.settings import Settings
from warmrun.versioning import (
    VersioningError,
    default_build_id,
    pipeline_source,
    replica_version,
)


async def info(http: httpx.AsyncClient) -> dict[str, Any]:
    return (await http.get("/info")).json()


async def start_pinned(
    client: Client, deployment: str, build_id: str, parameters: dict[str, Any]
) -> WorkflowHandle[Any, Any]:
    """Start a run pinned to a build, as an operator's override does."""
    return await client.start_workflow(
        "PipelineRun",
        PipelineRunInput(parameters=parameters),
        id=f"{deployment}-{time.monotonic_ns()}",
        task_queue=task_queue_for(deployment),
        versioning_override=PinnedVersioningOverride(
            WorkerDeploymentVersion(worker_deployment_for(deployment), build_id)
        ),
    )


async def eventually(check: Callable[[], Any], timeout: float = 30.0) -> None:
    """Wait until the async `check` returns true."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.2)


async def test_a_new_version_takes_new_runs_only_once_promoted(
    serve: ServeFn, dev_server: DevServer
) -> None:
    async def versions(
        build_id: str, **settings: Any
    ) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        # A client of its own, like a process: eager start goes to a worker of the client.
        client = await Client.connect(dev_server.address)
        return serve("sleepy", deployment="versions", build_id=build_id, client=client, **settings)

    async with await versions("one") as one:
        assert (await info(one)).items() >= {
            "build_id": "one",
            "worker_deployment": "warmrun-versions",
            "versioning": "pinned",
            "current": True,  # the first version of a deployment makes itself current
            "drained": False,
        }.items()
        async with await versions("two") as two:
            assert (await info(two))["current"] is False
            assert (await info(two))["drained"] is True  # never current: nothing pinned to it
            # New runs execute on the current version, whichever replica accepted them.
            accepted_by_two = await two.post("/invoke", json={"parameters": {}})
            run = (await two.get(f"/runs/{accepted_by_two.headers['X-Run-Id']}")).json()
            assert run["status"] == "succeeded"
            assert run["build_id"] == "one"

            in_flight = await submit(one, {"seconds": 1.5})
            await wait_for_status(one, in_flight, {"running"})
            async with await versions("three", promote=True) as three:
                assert (await info(three))["current"] is True
                assert (await info(one))["current"] is False
                assert (await info(one))["drained"] is False  # `in_flight` is pinned to it
                new = await three.post("/invoke", json={"parameters": {}})
                assert (await three.get(f"/runs/{new.headers['X-Run-Id']}")).json()[
                    "build_id"
                ] == "three"

                ended = await wait_for_status(three, in_flight, {"succeeded"})
                assert ended["build_id"] == "one"

                async def one_is_drained() -> bool:
                    return (await one.get("/ready")).json()["drained"] is True

                await eventually(one_is_drained)
                assert (await one.get("/ready")).status_code == 200  # drained is not unready


async def test_a_version_never_current_is_not_drained_while_an_operator_pinned_a_run_to_it(
    serve: ServeFn, temporal_client: Client
) -> None:
    async with (
        serve("sleepy", deployment="override-drain", build_id="main"),
        serve("sleepy", deployment="override-drain", build_id="side") as side,
    ):
        assert (await info(side))["current"] is False
        assert (await info(side))["drained"] is True
        # An operator sends a run to the side version, never current: stopping it now
        # would strand the run (Temporal counts the version as draining meanwhile).
        started: list[WorkflowHandle[Any, Any]] = []

        async def pinned_to_side() -> bool:
            # Temporal refuses to pin a run to a version until its worker has polled the
            # task queue, which the replica's start does not wait for.
            try:
                started.append(
                    await start_pinned(temporal_client, "override-drain", "side", {"seconds": 3.0})
                )
            except RPCError as err:
                if err.status != RPCStatusCode.FAILED_PRECONDITION:
                    raise
            return bool(started)

        await eventually(pinned_to_side)
        [handle] = started

        async def side_is(drained: bool) -> bool:
            return (await side.get("/ready")).json()["drained"] is drained

        await eventually(lambda: side_is(False))
        assert (await info(side))["drained"] is False
        run = await wait_for_status(side, handle.id, {"succeeded"})
        assert run["build_id"] == "side"
        await eventually(lambda: side_is(True))


async def test_a_pinned_run_without_a_worker_of_its_build_waits_queued_until_moved(
    serve: ServeFn, temporal_client: Client, dev_server: DevServer
) -> None:
    async with serve("sleepy", deployment="stranded", build_id="gone"):
        pass  # a version whose replicas are all gone
    async with serve("sleepy", deployment="stranded", build_id="live", promote=True) as http:
        handle = await start_pinned(temporal_client, "stranded", "gone", {})
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            run = (await http.get(f"/runs/{handle.id}")).json()
            assert run["status"] == "queued", run
            assert run["build_id"] == "gone"
            assert "gone" in run["waiting_for"]
            await asyncio.sleep(0.2)

        # The operator's move, as the README documents it.
        await temporal_cli(
            dev_server,
            "workflow",
            "update-options",
            "--workflow-id",
            handle.id,
            "--versioning-override-behavior",
            "pinned",
            "--versioning-override-deployment-name",
            "warmrun-stranded",
            "--versioning-override-build-id",
            "live",
        )
        run = await wait_for_status(http, handle.id, {"succeeded"})
        assert run["build_id"] == "live"
        assert run["waiting_for"] is None


async def test_a_stranded_run_takes_even_its_cancel_only_on_a_worker_of_its_build(
    serve: ServeFn, temporal_client: Client, dev_server: DevServer
) -> None:
    async with serve("sleepy", deployment="stranded-cancel", build_id="gone"):
        pass
    async with serve("sleepy", deployment="stranded-cancel", build_id="live", promote=True) as http:
        handle = await start_pinned(temporal_client, "stranded-cancel", "gone", {"seconds": 30})
        assert (await http.delete(f"/runs/{handle.id}")).status_code == 202
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            run = (await http.get(f"/runs/{handle.id}")).json()
            assert (run["status"], run["cancel_requested"]) == ("queued", True), run
            await asyncio.sleep(0.2)

        # Every open run of the build at once, as the README documents it.
        await temporal_cli(
            dev_server,
            "workflow",
            "update-options",
            "--query",
            "TemporalWorkerDeploymentVersion='warmrun-stranded-cancel:gone' "
            "AND ExecutionStatus='Running'",
            "--yes",
            "--versioning-override-behavior",
            "pinned",
            "--versioning-override-deployment-name",
            "warmrun-stranded-cancel",
            "--versioning-override-build-id",
            "live",
        )
        run = await wait_for_status(http, handle.id, {"cancelled"})
        assert run["build_id"] == "live"


async def test_two_first_versions_starting_at_once_agree_on_one_current(serve: ServeFn) -> None:
    first = serve("sleepy", deployment="first-two", build_id="a")
    second = serve("sleepy", deployment="first-two", build_id="b")
    a, b = await asyncio.gather(first.__aenter__(), second.__aenter__())
    try:
        currents = [(await info(a))["current"], (await info(b))["current"]]
        assert sorted(currents) == [False, True]
    finally:
        await asyncio.gather(first.__aexit__(None, None, None), second.__aexit__(None, None, None))


async def test_versioning_off_polls_unversioned(serve: ServeFn) -> None:
    async with serve("sleepy", deployment="unversioned", versioning="off") as http:
        answer = await http.post("/invoke", json={"parameters": {}})
        run = (await http.get(f"/runs/{answer.headers['X-Run-Id']}")).json()
        described = await info(http)
        ready = (await http.get("/ready")).json()

    assert run["status"] == "succeeded"
    assert run["build_id"] is None
    assert described["versioning"] == "off"
    assert described["current"] is None and described["drained"] is None
    assert ready["ready"] is True and ready["drained"] is None


def test_the_default_build_id_follows_the_pipelines_source(tmp_path: Path) -> None:
    source = tmp_path / "versioned.py"
    source.write_text("def score(x: int = 1) -> dict:\n    return {'x': x}\n")
    before = default_build_id(load_pipeline(f"{source}:score"))
    assert default_build_id(load_pipeline(f"{source}:score")) == before

    changed = tmp_path / "changed.py"
    changed.write_text("def score(x: int = 1) -> dict:\n    return {'x': x + 1}\n")
    assert default_build_id(load_pipeline(f"{changed}:score")) != before
    assert len(before) == 12 and before.isalnum()

    settings = Settings(build_id="2026.12.1-abc")
    assert replica_version(load_pipeline(f"{source}:score"), settings).build_id == "2026.12.1-abc"


def test_a_wrapped_pipeline_is_hashed_from_the_file_that_defines_it(tmp_path: Path) -> None:
    source = tmp_path / "wrapped.py"
    source.write_text(
        "import functools\n"
        "from pipelines import echo\n"
        "@functools.wraps(echo)\n"
        "def wrapper(**kwargs):\n    return echo(**kwargs)\n"
    )
    # functools.wraps sets __wrapped__: the code that runs is pipelines.py's.
    assert pipeline_source(load_pipeline(f"{source}:wrapper")) == PIPELINES


def test_a_deployment_name_temporal_cannot_version_is_refused() -> None:
    pipeline = load_pipeline(f"{PIPELINES}:echo")
    with pytest.raises(VersioningError, match=r"contains '\.'"):
        replica_version(pipeline, Settings(deployment="my.pipeline"))
    assert not replica_version(
        pipeline, Settings(deployment="my.pipeline", versioning="off")
    ).versioned
