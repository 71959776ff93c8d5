"""warmrun as a ZenML deployer flavor (issue 16): the real `zenml` CLI, in subprocesses.

The module has a ZenML home of its own (config, SQLite store, repository) in a temp
dir, so that the stacks it activates do not leak into the session's ZenML tests; this
process never imports zenml. One deployment (`trainer`, against the session's dev
server) is shared by the lifecycle tests, in the order a user goes: deploy, invoke,
read, logs, re-deploy with a run in flight, deprovision. Each provisioned process is
checked by pid to be gone afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import psutil
import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from warmrun.devserver import DevServer, free_port

ZENML = str(Path(sys.executable).parent / "zenml")
REPO_SOURCES = Path(__file__).parent / "zenml_repo"
PIPELINE = "zenml_pipelines.text_pipeline"
FAST_SETTINGS = {
    "generate_auth_key": True,
    "heartbeat_timeout": 3,  # a run whose process went away resumes within seconds
    "shutdown_grace": 0,  # a stopped process hands its runs over at once
    "lcm_timeout": 120,
}
CLI_TIMEOUT = 180.0
UNIMPORTABLE = '''"""A pipeline whose module imports in the `zenml` CLI but not in the warmrun
process, as when a dependency is missing where the deployment runs."""

import sys

from zenml import pipeline

from zenml_pipelines import tokenize

if sys.argv[1:2] == ["serve"]:  # `python -m warmrun serve zenml:...`
    raise ModuleNotFoundError("No module named 'a_dependency_missing_here'")


@pipeline(enable_cache=False)
def needs_a_dependency(text: str = "a b"):
    return tokenize(text=text)
'''


@dataclass
class Deployment:
    """What the ZenML store says about a deployment."""

    id: str
    status: str
    url: str | None
    auth_key: str | None
    metadata: dict[str, Any]

    @property
    def pid(self) -> int:
        return int(self.metadata["pid"])

    def http(self) -> httpx.Client:
        assert self.url, self
        headers = {"Authorization": f"Bearer {self.auth_key}"} if self.auth_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


class ZenMLHome:
    """A throwaway ZenML config, store and repository, and the `zenml` CLI run in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repo = root / "repo"
        self.config = root / "config"
        self.env = {
            **os.environ,
            "ZENML_CONFIG_PATH": str(self.config),
            "ZENML_LOCAL_STORES_PATH": str(root / "stores"),
            "ZENML_REPOSITORY_PATH": str(self.repo),
            "ZENML_ANALYTICS_OPT_IN": "false",
            "ZENML_ENABLE_RICH_TRACEBACK": "false",
            "ZENML_LOGGING_COLORS_DISABLED": "true",
            "AUTO_OPEN_DASHBOARD": "false",
            "COLUMNS": "200",
        }

    def zenml(
        self, *args: str, check: bool = True, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [ZENML, *args],
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"zenml {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def python(self, code: str, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def config_file(self, **deployer_settings: Any) -> str:
        path = self.root / f"deploy-{uuid4().hex[:8]}.json"  # ZenML reads YAML; JSON is YAML
        path.write_text(json.dumps({"settings": {"deployer": deployer_settings}}))
        return str(path)

    def deployment(self, name: str) -> Deployment:
        """What ZenML's store holds (read from its SQLite file: this process does not
        import zenml, and a `zenml` command takes seconds to start)."""
        database = self.root / "stores" / "default_zen_store" / "zenml.db"
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            row = db.execute(
                "SELECT id, status, url, auth_key, deployment_metadata FROM deployment "
                "WHERE name = ?",
                (name,),
            ).fetchone()
        if row is None:
            raise LookupError(f"no deployment {name!r} in the ZenML store")
        id, status, url, auth_key, metadata = row
        return Deployment(str(UUID(id)), status, url or None, auth_key, json.loads(metadata))

    def exists(self, name: str) -> bool:
        try:
            self.deployment(name)
        except LookupError:
            return False
        return True

    def deploy(self, name: str, *options: str, source: str = PIPELINE) -> Deployment:
        self.zenml("pipeline", "deploy", source, "-n", name, *options)
        return self.deployment(name)

    def zenml_runs(self, run_id: str) -> list[dict[str, Any]]:
        runs = self.zenml(
            "pipeline", "runs", "list", "--orchestrator_run_id", run_id, "-o", "json"
        ).stdout
        return json.loads(runs)["items"]

    def temporal_server(self, command: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "warmrun.zenml.temporal_server", command],
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=True,
        )
        return done.stdout


def answer_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON `zenml deployment invoke` prints (on stderr) after "with response:"."""
    output = done.stderr + done.stdout
    start = output.index("{", output.index("with response:"))
    answer, _ = json.JSONDecoder().raw_decode(output[start:])
    return answer


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


def serving(pid: int, deployment_id: str) -> bool:
    """`pid` is alive and is the deployment's `warmrun serve` process."""
    try:
        cmdline = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    return "serve" in cmdline and f"zenml:{deployment_id}" in cmdline


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill(pid: int) -> None:
    with contextlib.suppress(psutil.Error):
        psutil.Process(pid).kill()


def run_of(http: httpx.Client, run_id: str) -> dict[str, Any]:
    answer = http.get(f"/runs/{run_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_for_run(
    http: httpx.Client, run_id: str, statuses: set[str], timeout: float = 60
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        run = run_of(http, run_id)
        return run if run["status"] in statuses else None

    return wait_until(reached, timeout, f"run {run_id} reaching {statuses}")


@pytest.fixture(scope="module")
def home() -> Iterator[ZenMLHome]:
    root = Path(tempfile.mkdtemp(prefix="warmrun-tests-zenml-deployer-"))
    home = ZenMLHome(root)
    shutil.copytree(REPO_SOURCES, home.repo)
    (home.repo / "unimportable_pipelines.py").write_text(UNIMPORTABLE)
    home.zenml("init")
    home.zenml("deployer", "flavor", "register", "warmrun.zenml.WarmrunDeployerFlavor")
    try:
        yield home
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(home: ZenMLHome, dev_server: DevServer) -> str:
    """A stack whose warmrun deployer uses the session's dev server."""
    home.zenml(
        "deployer", "register", "temporal", "--flavor=warmrun",
        f"--temporal_address={dev_server.address}",
    )  # fmt: skip
    home.zenml("stack", "register", "tstack", "-o", "default", "-a", "default", "-D", "temporal")
    return "tstack"


@pytest.fixture(scope="module")
def trainer(home: ZenMLHome, stack: str) -> Iterator[Deployment]:
    """`zenml pipeline deploy zenml_pipelines.text_pipeline -n trainer`, shared."""
    deployment = home.deploy("trainer", "-s", stack, "-c", home.config_file(**FAST_SETTINGS))
    try:
        yield deployment
    finally:  # the lifecycle test deprovisions it; this only covers a failure on the way
        latest = home.deployment("trainer") if home.exists("trainer") else deployment
        for pid in {deployment.pid, latest.metadata.get("pid") or deployment.pid}:
            kill(pid)


@pytest.fixture(scope="module")
def run_in_flight() -> dict[str, str]:
    """The run an invoke test leaves running for the re-deploy test."""
    return {}


def test_deploy_reports_running_once_the_warmrun_process_is_ready(
    home: ZenMLHome, trainer: Deployment, dev_server: DevServer
) -> None:
    assert trainer.status == "running"
    assert trainer.url == f"http://127.0.0.1:{trainer.metadata['port']}"
    assert serving(trainer.pid, trainer.id)
    metadata = trainer.metadata
    assert metadata["temporal_address"] == dev_server.address
    assert metadata["task_queue"] == "warmrun-trainer"
    assert Path(metadata["log_file"]).is_file()
    assert Path(metadata["log_file"]).is_relative_to(home.config)
    with trainer.http() as http:
        assert http.get("/ready").status_code == 200  # answered before RUNNING
        info = http.get("/info").json()
        # ZenML's auth key is the deployment's bearer token.
        assert httpx.get(f"{trainer.url}/info").status_code == 401
    assert info["deployment_name"] == "trainer"
    assert info["pipeline_name"] == "text_pipeline"
    assert info["heartbeat_timeout"] == FAST_SETTINGS["heartbeat_timeout"]
    described = home.zenml("deployment", "describe", "trainer", "-m")
    assert "RUNNING" in described.stdout + described.stderr
    assert f"pid: {trainer.pid}" in described.stdout + described.stderr


def test_invoke_no_wait_returns_a_run_warmrun_and_temporal_know_and_sync_answers_as_zenml(
    home: ZenMLHome, trainer: Deployment, dev_server: DevServer, run_in_flight: dict[str, str]
) -> None:
    # The run waits at its first step until the re-deploy test opens its gate.
    gate = run_in_flight["gate"] = str(home.root / "gate")
    done = home.zenml(
        "deployment", "invoke", "trainer", "--text=x y z", f"--gate={gate}", "--no-wait"
    )
    accepted = answer_of(done)
    run_id = run_in_flight["run_id"] = accepted["run_id"]
    assert accepted["status"] == "queued"
    assert accepted["location"] == f"/runs/{run_id}"

    sync = answer_of(home.zenml("deployment", "invoke", "trainer", "--text=one two three"))
    assert sync["success"] is True, sync
    assert sync["outputs"]["n_tokens"] == 3
    assert sync["metadata"]["deployment_name"] == "trainer"
    assert sync["metadata"]["deployment_id"] == trainer.id
    assert sync["metadata"]["parameters_used"]["text"] == "one two three"
    assert sync["error"] is None

    with trainer.http() as http:
        run = run_of(http, run_id)  # meanwhile the --no-wait run goes on
    assert run["status"] in {"queued", "running"}, run
    assert run["deployment_name"] == "trainer"
    assert run_id in run["links"]["temporal_ui"]
    assert workflow_status(dev_server.address, run_id) == WorkflowExecutionStatus.RUNNING


def test_redeploy_replaces_the_process_and_a_run_in_flight_finishes_on_the_new_one(
    home: ZenMLHome,
    trainer: Deployment,
    stack: str,
    dev_server: DevServer,
    run_in_flight: dict[str, str],
) -> None:
    run_id = run_in_flight["run_id"]
    config = home.config_file(**FAST_SETTINGS)
    redeploy = subprocess.Popen(
        [ZENML, "pipeline", "deploy", PIPELINE, "-n", "trainer", "-s", stack, "-u", "-c", config],
        cwd=home.repo,
        env=home.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Once the old process drains (its worker has stopped the run at once: grace 0),
    # let the step in flight finish: the run stops at the next step, on the old process.
    with trainer.http() as http:

        def draining() -> bool:
            try:
                return http.get("/ready").status_code != 200
            except httpx.HTTPError:
                return True

        wait_until(draining, CLI_TIMEOUT, "the old process draining")
    time.sleep(1.0)
    Path(run_in_flight["gate"]).touch()
    output, _ = redeploy.communicate(timeout=CLI_TIMEOUT)
    assert redeploy.returncode == 0, output
    redeployed = home.deployment("trainer")
    assert redeployed.status == "running"
    assert redeployed.id == trainer.id
    assert redeployed.pid != trainer.pid
    assert gone(trainer.pid)
    assert serving(redeployed.pid, redeployed.id)
    assert redeployed.auth_key == trainer.auth_key  # ZenML keeps a generated key
    with redeployed.http() as http:
        run = wait_for_run(http, run_id, {"succeeded", "failed"}, timeout=90)
    assert run["status"] == "succeeded", run
    assert run["attempt"] == 2, run  # the old process handed it over; the new one finished it
    assert run["outputs"]["n_tokens"] == 3
    assert workflow_status(dev_server.address, run_id) == WorkflowExecutionStatus.COMPLETED
    [zenml_run] = home.zenml_runs(run_id)  # one ZenML run, continued in place
    assert zenml_run["id"] == run["zenml_run_id"]
    assert zenml_run["status"] == "completed"


def workflow_status(address: str, run_id: str) -> WorkflowExecutionStatus | None:
    """The run's workflow as the Temporal server holds it (what its UI shows)."""

    async def describe() -> WorkflowExecutionStatus | None:
        client = await Client.connect(address)
        return (await client.get_workflow_handle(run_id).describe()).status

    return asyncio.run(describe())


def test_logs_tail_and_follow(home: ZenMLHome, trainer: Deployment) -> None:
    tail = home.zenml("deployment", "logs", "trainer", "--tail", "5")
    lines = [line for line in (tail.stdout + tail.stderr).splitlines() if line.strip()]
    assert 0 < len(lines) <= 5, lines

    marker = f"run_never_{uuid4().hex}"
    follow = subprocess.Popen(
        [ZENML, "deployment", "logs", "trainer", "--follow"],
        cwd=home.repo,
        env=home.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    assert follow.stdout is not None
    reader = threading.Thread(target=lambda: seen.extend(follow.stdout or []), daemon=True)
    reader.start()
    try:
        with home.deployment("trainer").http() as http:
            # ZenML's CLI takes a few seconds to start: ask until the access log shows it.
            deadline = time.monotonic() + 60
            while not any(marker in line for line in list(seen)):
                assert time.monotonic() < deadline, "".join(seen[-20:])
                assert follow.poll() is None, "".join(seen[-20:])
                assert http.get(f"/runs/{marker}").status_code == 404
                time.sleep(0.5)
    finally:
        follow.kill()
        follow.wait()
        reader.join(10)


def test_deprovision_stops_the_process_and_delete_forgets_the_deployment(
    home: ZenMLHome, trainer: Deployment
) -> None:
    latest = home.deployment("trainer")
    home.zenml("deployment", "deprovision", "trainer", "-y")
    assert gone(latest.pid)
    assert home.deployment("trainer").status == "absent"
    assert not Path(latest.metadata["runtime_dir"]).exists()
    home.zenml("deployment", "delete", "trainer", "-y")
    assert not home.exists("trainer")


REGISTER_MORE_STACKS = """
import sys
from zenml.client import Client
from zenml.enums import StackComponentType

client = Client()
for name, configuration in (
    ("nowhere", {"temporal_address": sys.argv[1]}),
    ("laptop", {"embedded_temporal_port": int(sys.argv[2]),
                "embedded_temporal_ui_port": int(sys.argv[3])}),
):
    client.create_stack_component(name, "warmrun", StackComponentType.DEPLOYER, configuration)
    client.create_stack(name, components={
        StackComponentType.ORCHESTRATOR: "default",
        StackComponentType.ARTIFACT_STORE: "default",
        StackComponentType.DEPLOYER: name,
    })
"""


@pytest.fixture(scope="module")
def more_stacks(home: ZenMLHome) -> None:
    """`nowhere`: a deployer whose Temporal address nobody listens on; `laptop`: one with
    no address (the shared dev server), on free ports rather than 7233/8233, which others
    on this machine may be using. In one process: a `zenml` command takes seconds."""
    home.python(
        REGISTER_MORE_STACKS,
        f"127.0.0.1:{free_port()}",
        str(free_port()),
        str(free_port()),
    )


def test_deploy_fails_clearly_when_temporal_is_unreachable(
    home: ZenMLHome, more_stacks: None
) -> None:
    started = time.monotonic()
    done = home.zenml(
        "pipeline", "deploy", PIPELINE, "-n", "unreachable", "-s", "nowhere", check=False
    )
    assert done.returncode != 0
    assert "is unreachable" in done.stderr, done.stderr
    assert "zenml deployer update nowhere" in done.stderr
    assert time.monotonic() - started < 60
    assert home.deployment("unreachable").status == "error"


def test_deploy_fails_clearly_when_its_port_is_busy(home: ZenMLHome, stack: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = home.config_file(port=port, allocate_port_if_busy=False)
        done = home.zenml(
            "pipeline", "deploy", PIPELINE, "-n", "busy", "-s", stack, "-c", config, check=False
        )
    assert done.returncode != 0
    assert f"TCP port [{port}] is not available" in done.stderr, done.stderr
    assert "allocate_port_if_busy" in done.stderr
    assert home.deployment("busy").status == "error"


def test_deploy_fails_with_the_log_tail_when_the_process_cannot_import_the_pipeline(
    home: ZenMLHome, stack: str
) -> None:
    source = "unimportable_pipelines.needs_a_dependency"
    done = home.zenml("pipeline", "deploy", source, "-n", "broken", "-s", stack, check=False)
    assert done.returncode != 0
    assert "the warmrun process exited with code" in done.stderr, done.stderr
    assert "a_dependency_missing_here" in done.stderr  # the log's tail, in the message
    failed = home.deployment("broken")
    assert failed.status == "error"
    assert gone(failed.pid)
    logs = home.zenml("deployment", "logs", "broken")  # the log is kept for reading
    assert "a_dependency_missing_here" in logs.stdout + logs.stderr


def test_without_an_address_deployments_share_a_dev_server_that_stops_with_the_last(
    home: ZenMLHome, more_stacks: None
) -> None:
    state_file = home.config / "warmrun" / "temporal" / "server.json"
    pids: list[int] = []
    try:
        first = home.deploy("embedded-a", "-s", "laptop")
        pids.append(first.pid)
        server = json.loads(state_file.read_text())
        pids.append(server["pid"])
        address = f"127.0.0.1:{server['port']}"
        assert first.metadata["embedded_temporal"] is True
        assert first.metadata["temporal_address"] == address
        assert first.metadata["temporal_ui_url"] == f"http://127.0.0.1:{server['ui_port']}"
        # It outlived the `zenml pipeline deploy` that started it.
        assert "start-dev" in psutil.Process(server["pid"]).cmdline()

        second = home.deploy("embedded-b", "-s", "laptop")
        pids.append(second.pid)
        assert second.metadata["temporal_address"] == address
        assert json.loads(state_file.read_text())["pid"] == server["pid"]  # reused
        with second.http() as http:
            answer = http.post("/invoke", json={"parameters": {"text": "a b"}}).json()
        assert answer["success"] is True, answer

        home.zenml("deployment", "deprovision", "embedded-a", "-y")
        assert gone(first.pid)
        assert not gone(server["pid"])  # embedded-b still uses it
        with second.http() as http:
            assert http.get("/ready").status_code == 200

        home.zenml("deployment", "deprovision", "embedded-b", "-y")
        assert gone(second.pid)
        wait_until(lambda: gone(server["pid"]), 30, "the dev server stopping with the last")
        assert home.temporal_server("status").startswith("not running")
    finally:
        for pid in pids:
            kill(pid)


def test_the_deployer_binds_the_port_it_hands_to_the_process() -> None:
    """The port is bound by the deployer and its socket passed on (`warmrun serve --fd`):
    finding a port free is binding it, so nothing can take it before the process serves."""
    from zenml.deployers.exceptions import DeploymentProvisionError

    from warmrun.zenml.deployer import (
        WarmrunDeployerSettings,
        WarmrunDeploymentMetadata,
        _listening_socket,
    )

    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        refusing = WarmrunDeployerSettings(port=busy, allocate_port_if_busy=False)
        with pytest.raises(DeploymentProvisionError, match=f"TCP port \\[{busy}\\]"):
            _listening_socket(refusing, WarmrunDeploymentMetadata())

        # The previous port, now busy: the first free one of the range instead.
        moving = WarmrunDeployerSettings(port_range=(busy, busy + 50))
        with _listening_socket(moving, WarmrunDeploymentMetadata(port=busy)) as listener:
            port = listener.getsockname()[1]
            assert busy < port <= busy + 50
            # Listening already: a client's connection waits in its backlog.
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
