"""`warmrun invoke` and `warmrun runs ...` against a live deployment.

The commands block, and the deployment serves HTTP from the tests' event loop, so
they run in a thread (`CliRunner`) or in a real process (Ctrl-C).
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from temporalio.client import Client
from typer.testing import CliRunner, Result

from conftest import ServeFn, wait_for_status
from pipelines import HOSTILE
from warmrun.cli import app
from warmrun.cli.runs import follow
from warmrun.client import DeploymentClient
from warmrun.run import PipelineRunInput
from warmrun.workflows import PipelineRun

WARMRUN = str(Path(sys.executable).parent / "warmrun")

runner = CliRunner()


@pytest.fixture
def url(sleepy: httpx.AsyncClient) -> str:
    return str(sleepy.base_url)


async def warmrun(
    *args: str, input: str | None = None, env: dict[str, Any] | None = None
) -> Result:
    """Run the command line as a user would, off the event loop serving the deployment."""
    env = {"WARMRUN_URL": None, "WARMRUN_TOKEN": None, **(env or {})}
    return await asyncio.to_thread(runner.invoke, app, list(args), input=input, env=env)


# --- invoke -------------------------------------------------------------------------


async def test_invoke_wait_prints_the_outputs_and_exits_0(url: str) -> None:
    result = await warmrun("invoke", url, "-p", "steps=2", "-p", "seconds=0.2", "--wait")

    assert result.exit_code == 0, result.stderr
    outputs = json.loads(result.stdout)
    assert outputs["steps"] == 2
    assert outputs["run_id"] in result.stderr
    assert "2/2 steps" in result.stderr


async def test_parameters_come_from_json_with_p_values_over_them(url: str) -> None:
    result = await warmrun(
        "invoke",
        url,
        "--json",
        "-",
        "-p",
        "steps=3",
        "--no-wait",
        input='{"steps": 1, "seconds": 0.1}',
    )

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["steps"] == 3


async def test_a_failed_run_exits_1_with_its_error_on_stderr(url: str) -> None:
    result = await warmrun("invoke", url, "-p", "fail=boom", "--no-wait")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "failed" in result.stderr
    assert "ValueError: boom" in result.stderr


async def test_a_run_over_its_budget_exits_4(url: str) -> None:
    result = await warmrun("invoke", url, "-p", "seconds=30", "--timeout", "0.5", "--no-wait")

    assert result.exit_code == 4, result.stderr
    assert "timed out" in result.stderr


async def test_async_prints_the_accepted_run_then_get_cancel_and_watch_follow_it(
    url: str,
) -> None:
    started = await warmrun("invoke", url, "--async", "-p", "seconds=30", "--run-name", "cli")
    assert started.exit_code == 0, started.stderr
    accepted = json.loads(started.stdout)
    assert accepted["status"] == "queued"
    run_id = accepted["run_id"]

    got = await warmrun("runs", "get", url, run_id)
    assert got.exit_code == 0, got.stderr
    run = json.loads(got.stdout)
    assert (run["run_id"], run["run_name"]) == (run_id, "cli")
    assert run["status"] in {"queued", "running"}

    cancelled = await warmrun("runs", "cancel", url, run_id)
    assert cancelled.exit_code == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["cancel_requested"] is True

    watched = await warmrun("runs", "watch", url, run_id)
    assert watched.exit_code == 3, watched.stderr
    assert "cancelled" in watched.stderr


async def test_warmrun_url_stands_in_for_the_url(url: str) -> None:
    env = {"WARMRUN_URL": url}
    invoked = await warmrun("invoke", "-p", "steps=1", "--no-wait", env=env)
    assert invoked.exit_code == 0, invoked.stderr
    run_id = json.loads(invoked.stdout)["run_id"]

    got = await warmrun("runs", "get", run_id, env=env)

    assert got.exit_code == 0, got.stderr
    assert json.loads(got.stdout)["status"] == "succeeded"


async def test_an_unknown_run_exits_1_saying_so(url: str) -> None:
    # Run ids are URL-safe base64: one may start with "-" and is still a RUN_ID.
    for run_id in ("no-such-run", "-no-such-run"):
        result = await warmrun("runs", "get", url, run_id)

        assert result.exit_code == 1, result.stderr
        assert "404" in result.stderr
        assert f"no run '{run_id}'" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["invoke", "{url}", "-p", "no-equals-sign"],
        ["invoke", "{url}", "--json", "-"],
        ["invoke", "-p", "steps=1"],
        ["runs", "get", "{url}"],
    ],
    ids=["bad-p", "json-not-an-object", "no-url", "no-run-id"],
)
async def test_usage_errors_exit_2(url: str, args: list[str]) -> None:
    result = await warmrun(*(arg.format(url=url) for arg in args), input="[1, 2]")

    assert result.exit_code == 2, result.stdout + result.stderr


# --- the progress bar ---------------------------------------------------------------


async def test_the_progress_bar_shows_each_step_its_count_and_fraction(url: str) -> None:
    console = Console(record=True, force_terminal=True, width=120, file=io.StringIO())

    def follow_a_run() -> str:
        with DeploymentClient(url) as deployment:
            handle = deployment.submit({"seconds": 3, "steps": 3})
            return follow(handle, console, poll=0.2).status

    status = await asyncio.to_thread(follow_a_run)

    shown = console.export_text()
    assert status == "succeeded"
    assert "step-2" in shown, shown
    assert "1/3 steps" in shown or "2/3 steps" in shown, shown
    assert "3/3 steps" in shown
    assert "100%" in shown
    assert "━" in shown
    assert "succeeded" in shown


# --- Ctrl-C -------------------------------------------------------------------------


async def interrupt_a_following_invoke(url: str, answer: bytes | None) -> tuple[str, int, str]:
    """Start `warmrun invoke --wait` on a long run, press Ctrl-C, answer the prompt."""
    process = await asyncio.create_subprocess_exec(
        WARMRUN,
        "invoke",
        url,
        "-p",
        "seconds=60",
        "--wait",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None
    assert process.stderr is not None
    first = await asyncio.wait_for(process.stderr.readline(), 30)
    run_id = first.decode().split()[-1]
    await asyncio.sleep(1)  # following now

    process.send_signal(signal.SIGINT)
    if answer is not None:
        process.stdin.write(answer)
    process.stdin.close()
    _, rest = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return run_id, process.returncode, rest.decode()


async def test_ctrl_c_then_yes_cancels_the_run_and_names_it(
    url: str, sleepy: httpx.AsyncClient
) -> None:
    run_id, code, stderr = await interrupt_a_following_invoke(url, b"y\n")

    assert code == 130
    assert "Cancel run" in stderr
    assert f"run {run_id} cancellation requested" in stderr
    await wait_for_status(sleepy, run_id, {"cancelled"}, timeout=20)


async def test_ctrl_c_without_an_answer_leaves_the_run_running(
    url: str, sleepy: httpx.AsyncClient
) -> None:
    run_id, code, stderr = await interrupt_a_following_invoke(url, None)

    assert code == 130
    assert f"run {run_id} left running" in stderr
    assert f"warmrun runs watch {url.rstrip('/')} {run_id}" in stderr
    run = (await sleepy.get(f"/runs/{run_id}")).json()
    assert run["status"] == "running"
    assert run["cancel_requested"] is False
    await sleepy.delete(f"/runs/{run_id}")


# --- need server features that are being built ---------------------------------------


async def test_runs_list_shows_a_table_or_json_filtered_by_status(serve: ServeFn) -> None:
    async with serve("sleepy", deployment="cli-listed") as http:
        url = str(http.base_url)
        ok = await warmrun("invoke", url, "--run-name", "listed-ok", "--no-wait")
        bad = await warmrun("invoke", url, "-p", "fail=x", "--run-name", "listed-bad", "--no-wait")
        assert (ok.exit_code, bad.exit_code) == (0, 1)

        table = await warmrun("runs", "list", url)
        assert table.exit_code == 0, table.stderr
        assert "listed-ok" in table.stdout
        assert "listed-bad" in table.stdout
        assert table.stdout.index("listed-bad") < table.stdout.index("listed-ok")

        listed = await warmrun("runs", "list", url, "--status", "failed", "--json")
        assert listed.exit_code == 0, listed.stderr
        assert [run["run_name"] for run in json.loads(listed.stdout)] == ["listed-bad"]


async def test_the_token_comes_from_warmrun_token(serve: ServeFn) -> None:
    async with serve("sleepy", deployment="cli-guarded", auth_token="s3cret") as http:
        url = str(http.base_url)

        refused = await warmrun("invoke", url, "--no-wait")
        assert refused.exit_code == 1
        assert "401" in refused.stderr

        allowed = await warmrun("invoke", url, "--no-wait", env={"WARMRUN_TOKEN": "s3cret"})
        assert allowed.exit_code == 0, allowed.stderr


RAW_CONTROLS = ("\x1b", "\x07", "\x9b", "\u202e")


async def test_nothing_a_run_says_reaches_the_terminal_raw(
    serve: ServeFn, temporal_client: Client
) -> None:
    """A pipeline's error and step name, and a run name set by another Temporal client
    (the API refuses such names), carry escape sequences: every command shows them
    escaped, and JSON output stays the same values."""
    async with serve("hostile", deployment="cli-hostile") as http:
        url = str(http.base_url)
        invoked = await warmrun("invoke", url, "--no-wait")
        assert invoked.exit_code == 1
        failed_id = next(run["run_id"] for run in (await http.get("/runs")).json()["runs"])
        other_id = f"other-app-{uuid.uuid4().hex[:8]}"
        await temporal_client.start_workflow(
            PipelineRun.run,
            PipelineRunInput(parameters={}, run_name=f"named{HOSTILE}"),
            id=other_id,
            task_queue="warmrun-cli-hostile",
        )
        await wait_for_status(http, other_id, {"failed"})

        outputs = [
            invoked,
            await warmrun("runs", "list", url),
            await warmrun("runs", "get", url, failed_id),
            await warmrun("runs", "get", url, other_id),
            await warmrun("runs", "watch", url, other_id),
            await warmrun("runs", "get", url, f"missing{HOSTILE}"),
        ]

        for result in outputs:
            for shown in (result.stdout, result.stderr):
                assert not any(control in shown for control in RAW_CONTROLS), repr(shown)
        assert "boom\\x1b]0;pwned\\x07" in invoked.stderr  # shown, escaped
        assert "named\\x1b" in outputs[1].stdout
        assert "step\\x1b" in outputs[4].stderr
        run = json.loads(outputs[3].stdout)  # the same values, spelled in ASCII
        assert run["run_name"] == f"named{HOSTILE}"
        assert json.loads(outputs[2].stdout)["error"]["message"] == f"boom{HOSTILE}"
