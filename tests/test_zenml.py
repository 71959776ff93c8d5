"""A ZenML `@pipeline` served unchanged (SPEC §8): ZenML's contract, warmrun's runs.

Everything is real: ZenML 0.98 on a throwaway SQLite store (tests/conftest.py), ZenML's
own local deployer serving the same pipeline for comparison, the Temporal dev server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ServeFn, follow_events, steps_shown, submit, wait_for_status
from reliability.replicas import TERMINAL, Replica, poll_run
from warmrun.devserver import free_port

WORDS = "one two three four five six"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def text_pipeline_reference(repo: Path, attribute: str = "text_pipeline") -> str:
    return f"{repo / 'zenml_pipelines.py'}:{attribute}"


@pytest.fixture(scope="session")
async def zenml_text(serve: ServeFn, zenml_repo: Path) -> AsyncIterator[httpx.AsyncClient]:
    """`text_pipeline` served by warmrun (API and worker in this process)."""
    async with serve(text_pipeline_reference(zenml_repo), deployment="zenml-text") as http:
        yield http


@pytest.fixture(scope="session")
def zenml_deployment(zenml_repo: Path) -> Iterator[Any]:
    """The same pipeline behind ZenML's own local deployer (a process of its own)."""
    import zenml_pipelines  # the repository's copy, as ZenML resolves it
    from zenml.client import Client
    from zenml.enums import StackComponentType

    client = Client()
    client.create_stack_component(
        name="tests-local-deployer",
        flavor="local",
        component_type=StackComponentType.DEPLOYER,
        configuration={},
    )
    client.create_stack(
        name="tests-with-deployer",
        components={
            StackComponentType.ORCHESTRATOR: "default",
            StackComponentType.ARTIFACT_STORE: "default",
            StackComponentType.DEPLOYER: "tests-local-deployer",
        },
    )
    previous = client.active_stack_model.name
    client.activate_stack("tests-with-deployer")
    try:
        pipeline = zenml_pipelines.text_pipeline.with_options(
            settings={"deployer": {"port": free_port(), "lcm_timeout": 120}}
        )
        deployment = pipeline.deploy(deployment_name="zenml-texter")
    finally:
        client.activate_stack(previous)  # warmrun's runs go on on the default stack
    try:
        yield deployment
    finally:
        client.deprovision_deployment("zenml-texter")


def zenml_run(run_id: str) -> Any:
    from zenml.client import Client

    return Client().get_pipeline_run(run_id, hydrate=True)


def journal_of(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


def test_plain_warmrun_never_imports_zenml() -> None:
    code = (
        "import sys, warmrun, warmrun.api, warmrun.cli, warmrun.worker, warmrun.client\n"
        "from warmrun.pipeline import load_pipeline\n"
        f"load_pipeline({str(Path(__file__).parent / 'pipelines.py:sleepy')!r})\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] == 'zenml' or 'warmrun.zenml' in m]\n"
        "assert not loaded, loaded[:5]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_answers_as_zenml_own_deployment_server_does(
    zenml_text: httpx.AsyncClient, zenml_deployment: Any
) -> None:
    async with httpx.AsyncClient(base_url=zenml_deployment.url, timeout=60) as zenml:
        theirs = (await zenml.post("/invoke", json={"parameters": {"text": WORDS}})).json()
        ours = (await zenml_text.post("/invoke", json={"parameters": {"text": WORDS}})).json()
        assert theirs["success"] is ours["success"] is True
        assert ours["outputs"].keys() == theirs["outputs"].keys() == {"n_tokens", "summary"}
        assert ours["outputs"]["n_tokens"] == theirs["outputs"]["n_tokens"] == 6
        assert ours["metadata"].keys() >= theirs["metadata"].keys() - {"run_id"}
        assert ours["metadata"]["parameters_used"] == theirs["metadata"]["parameters_used"]
        assert ours["metadata"]["pipeline_name"] == theirs["metadata"]["pipeline_name"]
        zenml_run_id = ours["metadata"]["zenml_run_id"]
        assert ours["metadata"]["run_name"] == zenml_run(zenml_run_id).name

        failing = {"parameters": {"text": "a b", "fail_at": "count_tokens"}}
        theirs = (await zenml.post("/invoke", json=failing)).json()
        answer = await zenml_text.post("/invoke", json=failing)
        assert answer.status_code == 200
        ours = answer.json()
        assert theirs["success"] is ours["success"] is False
        assert theirs["outputs"] is ours["outputs"] is None
        assert ours["error"].startswith(theirs["error"])  # then the step's own exception
        assert "count_tokens: ValueError: count_tokens was told to fail" in ours["error"]

        unknown = {"parameters": {"txt": "a b"}}
        theirs = await zenml.post("/invoke", json=unknown)
        answer = await zenml_text.post("/invoke", json=unknown)
        assert theirs.status_code == answer.status_code == 422
        assert answer.headers["Content-Type"] == "application/problem+json"
        [zenml_error] = theirs.json()["detail"]
        [error] = [e for e in answer.json()["errors"] if e["loc"] == zenml_error["loc"]]
        assert error["type"] == zenml_error["type"] == "extra_forbidden"

        theirs = (await zenml.get("/info")).json()["pipeline"]
    info = (await zenml_text.get("/info")).json()
    assert info["parameters_schema"] == theirs["input_schema"]
    assert info["outputs_schema"] == theirs["output_schema"]
    assert info["max_concurrent_runs"] == 4  # ZenML's default here: SQLite allows no more


async def test_a_failed_step_fails_the_run_with_the_step_exception(
    zenml_text: httpx.AsyncClient,
) -> None:
    run_id = await submit(zenml_text, {"text": "a b", "fail_at": "count_tokens"})
    run = await wait_for_status(zenml_text, run_id, {"failed"}, timeout=60)

    assert run["error"]["type"] == "ValueError"
    assert run["error"]["message"].startswith("Failed to execute pipeline: ")
    assert run["progress"]["steps_completed"] == 1
    zenml = zenml_run(run["zenml_run_id"])
    assert zenml.status.value == "failed"
    assert {name: s.status.value for name, s in zenml.steps.items()} == {
        "tokenize": "completed",
        "count_tokens": "failed",
    }


async def test_each_run_is_a_zenml_run_found_from_either_side(
    zenml_text: httpx.AsyncClient,
) -> None:
    from zenml.client import Client

    run_id = await submit(zenml_text, {"text": WORDS}, run_name="linked")
    run = await wait_for_status(zenml_text, run_id, {"succeeded"}, timeout=60)

    assert run["outputs"]["n_tokens"] == 6
    assert run["progress"]["steps_total"] == run["progress"]["steps_completed"] == 3
    zenml = zenml_run(run["zenml_run_id"])
    assert zenml.orchestrator_run_id == run_id
    assert zenml.run_metadata["warmrun_run_id"] == run_id
    assert zenml.run_metadata["temporal_workflow_id"] == run_id
    assert zenml.name == "linked"
    assert zenml.status.value == "completed"
    assert [s.status.value for s in zenml.steps.values()] == ["completed"] * 3
    assert zenml.steps["count_tokens"].outputs["n_tokens"][0].load() == 6
    [found] = Client().list_pipeline_runs(orchestrator_run_id=run_id).items
    assert str(found.id) == run["zenml_run_id"]
    listed = (await zenml_text.get("/runs", params={"limit": 100})).json()["runs"]
    assert {r["run_id"]: r["zenml_run_id"] for r in listed}[run_id] == run["zenml_run_id"]


async def test_zenml_steps_are_progress_steps_with_an_event_each(
    zenml_text: httpx.AsyncClient, tmp_path: Path
) -> None:
    # The steps take no time: most begin and end between two of the poller's reads (and
    # the worker's heartbeats), yet each gets its event. The first waits for a gate the
    # test opens once its stream follows the run.
    gate = tmp_path / "gate"
    run_id = await submit(zenml_text, {"text": WORDS, "gate": str(gate)})
    events = await follow_events(zenml_text, run_id, after_first=gate.touch)

    progress = [data for name, data, _ in events if name == "progress"]
    assert steps_shown(events) == [(0, "tokenize"), (1, "count_tokens"), (2, "summarize")]
    assert {p["steps_total"] for p in progress} == {3}
    assert events[-1][0] == "succeeded"
    assert events[-1][1]["progress"]["steps_completed"] == 3


async def test_cancel_stops_between_steps_and_the_zenml_run_ends_stopped(
    zenml_text: httpx.AsyncClient, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    run_id = await submit(zenml_text, {"text": WORDS, "delay": 2.0, "journal": str(journal)})
    await wait_for_status(
        zenml_text, run_id, {"running"}, until=lambda r: r["progress"]["step"] == "tokenize"
    )
    answer = await zenml_text.delete(f"/runs/{run_id}")
    assert answer.status_code == 202

    run = await wait_for_status(zenml_text, run_id, {"cancelled"}, timeout=30)
    assert journal_of(journal) == ["tokenize"]  # the step in flight finished, no other began
    zenml = zenml_run(run["zenml_run_id"])
    assert zenml.status.value == "stopped"
    assert {name: s.status.value for name, s in zenml.steps.items()} == {"tokenize": "completed"}


async def test_timeout_stops_between_steps_and_the_zenml_run_ends_failed(
    zenml_text: httpx.AsyncClient, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    run_id = await submit(
        zenml_text, {"text": WORDS, "delay": 2.0, "journal": str(journal)}, timeout=1.5
    )
    run = await wait_for_status(zenml_text, run_id, {"timed_out"}, timeout=30)

    assert "summarize" not in journal_of(journal)
    zenml = zenml_run(run["zenml_run_id"])
    assert zenml.status.value == "failed"
    assert "timed out" in (zenml.body.status_reason or "")
    assert all(s.status.is_finished for s in zenml.steps.values())


async def test_on_init_runs_once_per_process_and_on_cleanup_at_shutdown(
    zenml_repo: Path, dev_server: Any, tmp_path: Path
) -> None:
    """A real `warmrun serve` process: ZenML keeps the `on_init` state process-wide."""
    cleanup = tmp_path / "cleaned-up"
    replica = Replica(
        text_pipeline_reference(zenml_repo),
        deployment="zenml-warm",
        temporal_address=dev_server.address,
        log_dir=tmp_path,
    )
    replica.env["ZENML_TEST_CLEANUP_FILE"] = str(cleanup)
    try:
        await replica.start().ready()
        async with httpx.AsyncClient(base_url=replica.url, timeout=60) as http:
            summaries = []
            for _ in range(3):
                answer = (await http.post("/invoke", json={"parameters": {"text": "a"}})).json()
                summaries.append(answer["outputs"]["summary"])
        assert not cleanup.exists()
        replica.signal(signal.SIGTERM)
        assert await replica.exit_code() == 0, replica.tail()
    finally:
        replica.stop()

    for number, summary in enumerate(summaries, start=1):
        assert f"pid {replica.pid}, init calls 1, run #{number} of this process" in summary
    assert cleanup.read_text() == f"cleaned up {replica.pid}\n"


async def test_50_concurrent_invocations_all_succeed_the_excess_queued(
    zenml_text: httpx.AsyncClient,
) -> None:
    async def invoke(index: int) -> dict[str, Any]:
        answer = await zenml_text.post(
            "/invoke", json={"parameters": {"text": "w " * (index + 1)}}, timeout=300
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    async def queued_seen() -> bool:
        while True:
            listed = await zenml_text.get("/runs", params={"status": "queued", "limit": 5})
            runs = listed.json()["runs"]
            if runs:
                return True
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(queued_seen())
    answers = await asyncio.gather(*(invoke(index) for index in range(50)))
    assert await asyncio.wait_for(watcher, 1)

    failures = [a["error"] for a in answers if not a["success"]]
    assert not failures, failures[:3]
    assert [a["outputs"]["n_tokens"] for a in answers] == list(range(1, 51))


async def test_serves_a_registered_zenml_deployment(
    zenml_deployment: Any, dev_server: Any, tmp_path: Path
) -> None:
    """`warmrun serve zenml:DEPLOYMENT`, what the warmrun deployer flavor launches."""
    replica = Replica(
        f"zenml:{zenml_deployment.name}",
        deployment="unused",
        temporal_address=dev_server.address,
        log_dir=tmp_path,
    )
    del replica.env["WARMRUN_DEPLOYMENT"]  # the deployment's own name is the default
    try:
        await replica.start().ready()
        async with httpx.AsyncClient(base_url=replica.url, timeout=60) as http:
            info = (await http.get("/info")).json()
            answer = (await http.post("/invoke", json={"parameters": {"text": WORDS}})).json()
    finally:
        replica.stop()

    assert info["deployment_name"] == zenml_deployment.name
    assert info["task_queue"] == f"warmrun-{zenml_deployment.name}"
    assert answer["success"] is True, answer
    assert answer["outputs"]["n_tokens"] == 6
    metadata = answer["metadata"]
    assert metadata["deployment_id"] == str(zenml_deployment.id)
    assert metadata["snapshot_id"] == str(zenml_deployment.snapshot.id)
    assert metadata["deployment_name"] == zenml_deployment.name
    zenml = zenml_run(metadata["zenml_run_id"])
    assert zenml.orchestrator_run_id == metadata["run_id"]


async def test_accepting_a_run_makes_no_zenml_store_round_trip(
    serve: ServeFn, zenml_repo: Path, zenml_text: httpx.AsyncClient
) -> None:
    """An API-only replica of the pipeline accepts runs without one SQL statement on the
    ZenML store (this process's: nothing else here uses it meanwhile). Loading the
    pipeline may read the store (ZenML's decorator looks for code repositories)."""
    from sqlalchemy import event
    from zenml.client import Client

    statements: list[str] = []
    engine = Client().zen_store.engine

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    reference = text_pipeline_reference(zenml_repo)
    async with serve(reference, deployment="zenml-accept-only", run_worker=False) as http:
        event.listen(engine, "before_cursor_execute", count)
        try:
            for _ in range(10):
                await submit(http, {"text": WORDS})
            await submit(http, {"text": WORDS}, run_name="named")
            answer = await http.post("/invoke", json={"parameters": {"txt": 1}})
            assert answer.status_code == 422
            assert (await http.get("/info")).status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", count)
    assert statements == []


def test_a_pipeline_zenml_cannot_deploy_is_refused_at_load(tmp_path: Path) -> None:
    from warmrun.pipeline import PipelineLoadError, load_pipeline

    source = tmp_path / "undeployable.py"
    source.write_text(
        "from zenml import pipeline, step\n\n"
        "@step\ndef echo(x: int) -> int:\n    return x\n\n"
        "@pipeline\ndef needs_x(x: int):\n    echo(x)\n"
    )
    with pytest.raises(PipelineLoadError, match="needs a default for each parameter"):
        load_pipeline(f"{source}:needs_x")
    with pytest.raises(PipelineLoadError, match="no ZenML deployment 'nope'"):
        load_pipeline("zenml:nope")


async def test_warmrun_dev_serves_the_zenml_example_as_the_readme_shows(
    zenml_repo: Path, tmp_path: Path
) -> None:
    from test_cli import WARMRUN, running, wait_until_ready

    # Inside the ZenML repository, where ZenML resolves a pipeline's code from.
    example = shutil.copy(EXAMPLES / "zenml_pipeline.py", zenml_repo / "zenml_pipeline.py")
    port = free_port()
    command = [
        WARMRUN,
        "dev",
        f"{example}:review_pipeline",
        "--port",
        str(port),
        "--temporal-port",
        str(free_port()),
        "--ui-port",
        str(free_port()),
        "--data-dir",
        str(tmp_path / ".warmrun"),
    ]
    with running(command, cwd=zenml_repo, env={**os.environ, "TEMPORAL_ADDRESS": ""}) as process:
        url = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(wait_until_ready, url, process, 120)
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            answer = await http.post("/invoke", json={"parameters": {"review": "Awful, broken"}})
            assert answer.status_code == 200
            assert answer.json()["success"] is True, answer.json()
            assert answer.json()["outputs"] == {"label": "negative", "score": -1.0}
            assert answer.json()["metadata"]["zenml_run_id"]

            accepted = await http.post(
                "/invoke",
                json={"parameters": {"review": "Great phone, I love it"}, "run_name": "review-1"},
                headers={"Prefer": "respond-async"},
            )
            assert accepted.status_code == 202
        run = await poll_run(url, accepted.json()["run_id"], TERMINAL)
        assert run["status"] == "succeeded", run
        assert run["outputs"] == {"label": "positive", "score": 1.0}
        assert run["progress"]["steps_completed"] == run["progress"]["steps_total"] == 3
        assert zenml_run(run["zenml_run_id"]).orchestrator_run_id == run["run_id"]
    assert process.returncode == 0
