"""The run contract (`warmrun.run`) is the one place a run's shape is spelled."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from warmrun.run import (
    CLOSED_AS,
    ENDING_MEMO_MAX_BYTES,
    FailureDetails,
    Progress,
    RunEnding,
    RunError,
    RunMemo,
    RunStatus,
    ZenMLRunLink,
    checkpoints_from_heartbeat,
    new_run_id,
    run_id_for_request,
    runs_query,
    zenml_run_memo,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "warmrun"
CONTRACT = SRC / "run.py"
STATUSES = {status.value for status in RunStatus}
MEMO_ONLY_KEYS = {"outcome", "request_fingerprint", "callback_events", "zenml_run"}
# Strings that equal a status or a memo key but are not one: a webhook delivery's own
# states, the metrics label of how a delivery attempt went, Prometheus's label name,
# the request fields an idempotency fingerprint covers.
NOT_THE_RUNS = {
    ("resource.py", "failed"),
    ("services/webhook_state.py", "failed"),
    ("activities/deliver_webhook.py", "failed"),
    ("metrics.py", "outcome"),
    ("services/idempotency.py", "callback_events"),
}


def _strings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_no_status_or_memo_key_is_spelled_outside_the_contract() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path == CONTRACT:
            continue
        where = str(path.relative_to(SRC))
        for line, value in _strings(path):
            if (where, value) in NOT_THE_RUNS:
                continue
            if value in STATUSES:
                found.append(f"{where}:{line}: status {value!r}")
            if value in MEMO_ONLY_KEYS:
                found.append(f"{where}:{line}: memo key {value!r}")
    assert not found, "\n".join(found)


def test_nothing_reads_a_memo_by_key_outside_the_contract() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path == CONTRACT:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            target = None
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                target = node.value
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"get", "memo_value"}
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                target = node.func.value if node.func.attr == "get" else node.func
            if target is not None and "memo" in ast.unparse(target).lower():
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "\n".join(found)


def test_the_client_loads_no_workflow_or_server_code() -> None:
    code = (
        "import sys, warmrun.client\n"
        "loaded = [m for m in sys.modules if m.startswith(('warmrun.workflows', "
        "'warmrun.activities', 'warmrun.api', 'warmrun.services', 'temporalio'))]\n"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_callers_helpers_load_no_server_code() -> None:
    """`warmrun.temporal` (with the Nexus service definition) is what other Temporal
    apps import, in their workflow sandbox: none of the deployment's server side."""
    code = (
        "import sys, warmrun.temporal\n"
        "loaded = [m for m in sys.modules if m.startswith(('warmrun.workflows', "
        "'warmrun.activities', 'warmrun.api', 'warmrun.services', 'warmrun.nexus', "
        "'fastapi', 'httpx'))]\n"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_memo_reads_back_as_written() -> None:
    ending = RunEnding(
        RunStatus.SUCCEEDED,
        complete=True,
        started_at="2026-12-01T00:00:00+00:00",
        attempt=2,
        progress=Progress(step=None, steps_completed=3, steps_total=3, fraction=1.0),
        outputs={"n": 1},
    )
    memo = RunMemo(
        pipeline_name="p",
        run_name="r",
        callback_url="https://example.invalid/hook",
        callback_events=["succeeded"],
        request_fingerprint="abc",
        ending=ending,
    )

    assert RunMemo.from_memo(memo.to_memo(), "Completed") == memo
    # Temporal says the run closed another way (terminated after the record): ignored.
    assert RunMemo.from_memo(memo.to_memo(), "Terminated").ending is None
    assert RunMemo.from_memo(memo.to_memo(), None).ending is None


def test_an_ending_too_large_for_a_memo_leaves_its_outputs_then_its_message_out() -> None:
    big = RunEnding(RunStatus.SUCCEEDED, complete=True, outputs={"blob": "x" * 5000}).fitted()
    assert big.outputs is None and big.result_in_history
    failed = RunEnding(RunStatus.FAILED, error=RunError("ValueError", "no " * 1000)).fitted()
    assert failed.error == RunError("ValueError", "") and failed.result_in_history
    small = RunEnding(RunStatus.SUCCEEDED, complete=True, outputs={"n": 1}).fitted()
    assert small.outputs == {"n": 1} and not small.result_in_history
    assert len(str(big.to_memo())) < ENDING_MEMO_MAX_BYTES


def test_failure_details_are_parsed_from_what_the_activity_attaches() -> None:
    details = [
        {
            "started_at": "2026-12-01T00:00:00+00:00",
            "attempt": 3,
            "progress": {"step": "train", "steps_completed": 1, "unknown": True},
        }
    ]
    parsed = FailureDetails.from_details(details)
    assert parsed == FailureDetails(
        started_at="2026-12-01T00:00:00+00:00",
        attempt=3,
        progress=Progress(step="train", steps_completed=1),
    )
    assert FailureDetails.from_details([]) is None
    assert FailureDetails.from_details(["not a dict"]) is None
    ending = RunEnding.of_failure(RunStatus.FAILED, RunError("X", "y"), details)
    assert ending.complete and ending.attempt == 3 and ending.progress == parsed.progress


def test_checkpoints_come_from_the_second_heartbeat_detail() -> None:
    details = [{"step": "b"}, [{"name": "a", "result": 1}, {"name": "b", "saved": False}, 7]]
    assert [c.name for c in checkpoints_from_heartbeat(details)] == ["a", "b"]
    assert checkpoints_from_heartbeat([{"step": "a"}]) == []


@pytest.mark.parametrize("status", list(RunStatus))
def test_every_status_has_a_visibility_query(status: RunStatus) -> None:
    query = runs_query("warmrun-x", status)
    assert query.startswith("TaskQueue = 'warmrun-x' AND WorkflowType = 'PipelineRun' AND ")
    if status.is_terminal:
        assert any(status in statuses for statuses in CLOSED_AS.values())
    else:
        assert query.endswith("ExecutionStatus = 'Running'")


def test_run_ids_are_url_safe_and_never_look_like_an_option() -> None:
    ids = {new_run_id() for _ in range(100)}
    assert len(ids) == 100
    for run_id in ids:
        assert run_id.startswith("run_") and len(run_id) == 26
        assert all(char.isalnum() or char in "-_" for char in run_id)


def test_a_nexus_request_id_names_one_run_id_of_the_usual_shape() -> None:
    run_id = run_id_for_request("sentiment", "0b6f1c9e-4d1e-4ad7-9f0e-2d3c1a5b7e99")
    assert run_id == run_id_for_request("sentiment", "0b6f1c9e-4d1e-4ad7-9f0e-2d3c1a5b7e99")
    assert run_id != run_id_for_request("sentiment", "another request")
    assert run_id != run_id_for_request("other", "0b6f1c9e-4d1e-4ad7-9f0e-2d3c1a5b7e99")
    assert run_id.startswith("run_") and len(run_id) == len(new_run_id())
    assert all(char.isalnum() or char in "-_" for char in run_id)


def test_the_zenml_run_link_reads_back_from_the_memo() -> None:
    link = ZenMLRunLink(run_id="5d1c…", run_name="r", run_index=3, original_run_id="0a2f…")
    memo = RunMemo(pipeline_name="p", zenml_run=link).to_memo()

    assert RunMemo.from_memo(memo).zenml_run == link
    assert RunMemo.from_memo({**memo, **zenml_run_memo(link)}).zenml_run == link
    assert RunMemo.from_memo({"pipeline_name": "p"}).zenml_run is None
