"""Other Temporal applications call a deployment as a Nexus operation.

The deployment serves for real (API + worker with its `warmrun` Nexus service); the
callers are workflows in a second namespace the tests create, reaching it through a
Nexus endpoint created as `warmrun dev` creates it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nexusrpc
import pytest
import temporalio.nexus
from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import EventType
from temporalio.api.operatorservice.v1 import ListNexusEndpointsRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, RegisterNamespaceRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import CancelledError, NexusOperationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from conftest import PIPELINES, TEST_SETTINGS, ServeFn, submit, wait_for_status
from nexus_callers import CALLERS, CallByName, CallRunTyped, GetRun, NamedCall, TypedCall
from warmrun.devserver import DevServer
from warmrun.nexus import RunsNexusHandler, ensure_nexus_endpoint
from warmrun.pipeline import load_pipeline
from warmrun.run import nexus_endpoint_for
from warmrun.settings import Settings
from warmrun.temporal import PipelineRunInput, PipelineRunResult, WarmrunService
from warmrun.worker import running_worker

CALLER_NAMESPACE = "callers"
CALLER_QUEUE = "nexus-callers"
DEPLOYMENT = "nexus-sleepy"
ENDPOINT = nexus_endpoint_for(DEPLOYMENT)
NEXUS_OPERATION_STARTED = EventType.EVENT_TYPE_NEXUS_OPERATION_STARTED


async def create_namespace(client: Client, name: str) -> None:
    try:
        await client.workflow_service.register_namespace(
            RegisterNamespaceRequest(
                namespace=name, workflow_execution_retention_period=Duration(seconds=86400)
            )
        )
    except RPCError as err:
        if err.status != RPCStatusCode.ALREADY_EXISTS:
            raise
    for _ in range(100):  # usable within moments
        try:
            await client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=name)
            )
            return
        except RPCError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"namespace {name} never became usable")


@pytest.fixture(scope="module")
async def caller(temporal_client: Client, dev_server: DevServer) -> AsyncIterator[Client]:
    """A client of the callers' namespace, its worker running the caller workflows."""
    await create_namespace(temporal_client, CALLER_NAMESPACE)
    client = await Client.connect(dev_server.address, namespace=CALLER_NAMESPACE)
    async with Worker(client, task_queue=CALLER_QUEUE, workflows=CALLERS):
        yield client


@pytest.fixture(scope="module")
async def deployment(serve: ServeFn, temporal_client: Client) -> AsyncIterator[httpx.AsyncClient]:
    async with serve("sleepy", deployment=DEPLOYMENT) as http:
        assert await ensure_nexus_endpoint(temporal_client, DEPLOYMENT) == ENDPOINT
        yield http


def call_id() -> str:
    return f"caller-{uuid.uuid4().hex[:10]}"


async def call_typed(caller: Client, input: PipelineRunInput, caller_id: str | None = None) -> Any:
    return await caller.execute_workflow(
        CallRunTyped.run,
        TypedCall(ENDPOINT, input),
        id=caller_id or call_id(),
        task_queue=CALLER_QUEUE,
    )


async def call_by_name(caller: Client, call: NamedCall) -> dict[str, Any]:
    return await caller.execute_workflow(
        CallByName.run, call, id=call_id(), task_queue=CALLER_QUEUE
    )


async def listed(http: httpx.AsyncClient, run_id: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in (await http.get("/runs")).json()["runs"]:
            if run["run_id"] == run_id:
                return run
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} never listed")


async def test_a_caller_in_another_namespace_gets_the_outputs_of_an_ordinary_run(
    deployment: httpx.AsyncClient, caller: Client, temporal_client: Client
) -> None:
    caller_id = call_id()
    outcome = await call_typed(
        caller, PipelineRunInput(parameters={"steps": 2}, run_name="over nexus"), caller_id
    )

    assert isinstance(outcome.result, PipelineRunResult)
    assert outcome.result.outputs["steps"] == 2
    assert outcome.result.outputs["run_id"] == outcome.run_id
    assert outcome.result.run_name == "over nexus"
    run = (await deployment.get(f"/runs/{outcome.run_id}")).json()
    assert run["status"] == "succeeded"
    assert run["run_name"] == "over nexus"
    assert run["deployment_name"] == DEPLOYMENT
    assert run["outputs"] == outcome.result.outputs
    assert (await listed(deployment, outcome.run_id))["status"] == "succeeded"

    # Started as the API starts a run: summary, details, memo, policy, backstop timeout.
    description = await temporal_client.get_workflow_handle(outcome.run_id).describe()
    assert await description.static_summary() == "sleepy: over nexus"
    assert '"steps": 2' in (await description.static_details() or "")
    assert (await description.memo())["pipeline_name"] == "sleepy"
    config = description.raw_description.execution_config
    assert config.workflow_execution_timeout.ToSeconds() == 3600 + 2 * 10  # cancel_grace 10
    history = await temporal_client.get_workflow_handle(outcome.run_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    assert b'"pipeline_name":"sleepy"' in started.input.payloads[0].data.replace(b" ", b"")
    # The two ends link to each other (the Temporal UI shows both links).
    [callback] = description.raw_description.callbacks
    [to_caller] = callback.callback.links
    assert to_caller.workflow_event.namespace == CALLER_NAMESPACE
    assert to_caller.workflow_event.workflow_id == caller_id
    caller_history = await caller.get_workflow_handle(caller_id).fetch_history()
    [operation_started] = [
        event for event in caller_history.events if event.event_type == NEXUS_OPERATION_STARTED
    ]
    [to_run] = operation_started.links
    assert to_run.workflow_event.namespace == temporal_client.namespace
    assert to_run.workflow_event.workflow_id == outcome.run_id


async def test_a_string_typed_call_works_as_another_sdk_makes_it(
    deployment: httpx.AsyncClient, caller: Client
) -> None:
    answer = await call_by_name(caller, NamedCall(ENDPOINT, {"parameters": {"steps": 3}}))

    result = answer["result"]
    assert result["outputs"]["steps"] == 3
    run = (await deployment.get(f"/runs/{result['outputs']['run_id']}")).json()
    assert run["status"] == "succeeded"


async def test_cancelling_the_caller_cancels_the_run_once_its_pipeline_stopped(
    deployment: httpx.AsyncClient, caller: Client, temporal_client: Client, tmp_path: Path
) -> None:
    marker = tmp_path / "stopped"
    # The pipeline looks at cancellation only every second: it must be waited for.
    input = PipelineRunInput(parameters={"seconds": 60, "marker": str(marker), "check_every": 1})
    handle = await caller.start_workflow(
        CallRunTyped.run, TypedCall(ENDPOINT, input), id=call_id(), task_queue=CALLER_QUEUE
    )
    run_id = await started_run(caller, handle.id)
    await wait_for_status(deployment, run_id, {"running"})

    await handle.cancel()

    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), timeout=30)
    # The caller got control back only after the pipeline had stopped and the run ended.
    assert marker.exists()
    run = (await deployment.get(f"/runs/{run_id}")).json()
    assert run["status"] == "cancelled"
    assert run["cancel_requested"] is True
    assert isinstance(failure.value.cause, CancelledError)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED


async def test_cancelling_the_run_fails_the_callers_operation_as_cancelled(
    deployment: httpx.AsyncClient, caller: Client
) -> None:
    input = PipelineRunInput(parameters={"seconds": 60})
    handle = await caller.start_workflow(
        CallRunTyped.run, TypedCall(ENDPOINT, input), id=call_id(), task_queue=CALLER_QUEUE
    )
    run_id = await started_run(caller, handle.id)

    assert (await deployment.delete(f"/runs/{run_id}")).status_code == 202

    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), timeout=30)
    error = failure.value.cause
    assert isinstance(error, NexusOperationError)
    assert isinstance(error.cause, CancelledError)
    assert (await deployment.get(f"/runs/{run_id}")).json()["status"] == "cancelled"


async def started_run(caller: Client, caller_id: str, timeout: float = 30.0) -> str:
    """The run a caller's pending `run` operation started, from its operation token."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        description = await caller.get_workflow_handle(caller_id).describe()
        for pending in description.raw_description.pending_nexus_operations:
            if pending.operation_token:
                token = pending.operation_token
                return temporalio.nexus.WorkflowHandle.from_token(token).workflow_id
        await asyncio.sleep(0.05)
    raise AssertionError(f"{caller_id} started no run")


async def test_bad_input_fails_the_operation_at_once_naming_the_fields(
    deployment: httpx.AsyncClient, caller: Client
) -> None:
    bad = {
        "parameters": {"seconds": "long", "nope": 1},
        "run_nam": "typo",
        "timeout": -1,
        "policy": {"max_attempts": 100},
    }
    started = time.monotonic()

    answer = await call_by_name(caller, NamedCall(ENDPOINT, bad, timeout=60))

    # Retried, it would have failed only at the 60 s timeout, without the fields.
    assert time.monotonic() - started < 10
    handler_error, cause = answer["failure"][1:3]
    assert handler_error["handler_error"] == "BAD_REQUEST"
    assert handler_error["retryable"] is False
    assert cause["type"] == "InvalidParameters"
    assert cause["non_retryable"] is True
    errors = cause["details"][0]["errors"]
    assert {tuple(error["loc"]) for error in errors} == {
        ("parameters", "seconds"),
        ("parameters", "nope"),
        ("run_nam",),
        ("timeout",),
        ("policy",),
    }
    for field in ("parameters.seconds", "parameters.nope", "run_nam", "timeout", "policy"):
        assert field in handler_error["message"]


async def test_a_callback_this_deployment_cannot_send_fails_the_operation_at_once(
    deployment: httpx.AsyncClient, caller: Client
) -> None:
    """The test deployment has no webhook secret, as the API's 422 `webhooks_disabled`."""
    input = {"parameters": {}, "callback_url": "http://127.0.0.1:9/hook"}

    answer = await call_by_name(caller, NamedCall(ENDPOINT, input))

    handler_error, cause = answer["failure"][1:3]
    assert handler_error["handler_error"] == "BAD_REQUEST"
    assert handler_error["retryable"] is False
    [error] = cause["details"][0]["errors"]
    assert error["loc"] == ["callback_url"]
    assert "WARMRUN_WEBHOOK_SECRET" in error["msg"]


async def test_a_run_that_fails_fails_the_operation_with_the_runs_error(
    deployment: httpx.AsyncClient, caller: Client
) -> None:
    with pytest.raises(WorkflowFailureError) as failure:
        await call_typed(caller, PipelineRunInput(parameters={"fail": "the model is gone"}))

    error = failure.value.cause
    assert isinstance(error, NexusOperationError)
    assert error.cause is not None
    assert error.cause.type == "ValueError"  # type: ignore[attr-defined]
    assert "the model is gone" in error.cause.message  # type: ignore[attr-defined]


async def test_get_answers_the_run_resource_as_the_api_does(
    deployment: httpx.AsyncClient, caller: Client
) -> None:
    outcome = await call_typed(caller, PipelineRunInput(parameters={"steps": 2}))

    got = await caller.execute_workflow(
        GetRun.run, args=[ENDPOINT, outcome.run_id], id=call_id(), task_queue=CALLER_QUEUE
    )

    assert got["run"] == (await deployment.get(f"/runs/{outcome.run_id}")).json()
    assert got["run"]["status"] == "succeeded"


async def test_get_of_an_unknown_run_fails_at_once_as_not_found(
    deployment: httpx.AsyncClient, caller: Client
) -> None:
    got = await caller.execute_workflow(
        GetRun.run, args=[ENDPOINT, "run_no-such-run"], id=call_id(), task_queue=CALLER_QUEUE
    )

    handler_error = got["failure"][1]
    assert handler_error["handler_error"] == "NOT_FOUND"
    assert handler_error["retryable"] is False


async def nexus_url(client: Client, dev_server: DevServer, endpoint: str, operation: str) -> str:
    listed = await client.operator_service.list_nexus_endpoints(
        ListNexusEndpointsRequest(name=endpoint)
    )
    [found] = listed.endpoints
    return (
        f"http://{dev_server.host}:{dev_server.http_port}/nexus/endpoints/{found.id}"
        f"/services/warmrun/{operation}"
    )


async def test_two_starts_with_one_request_id_give_one_run(
    deployment: httpx.AsyncClient, temporal_client: Client, dev_server: DevServer
) -> None:
    """Nexus's own HTTP protocol, as a caller's server retries a start: the same
    `Nexus-Request-Id` twice, and once more after the run ended."""
    url = await nexus_url(temporal_client, dev_server, ENDPOINT, "run")
    request_id = str(uuid.uuid4())
    body = {"parameters": {"seconds": 0.5}}
    async with httpx.AsyncClient(timeout=30) as nexus:

        async def start(request_id: str) -> str:
            answer = await nexus.post(url, json=body, headers={"Nexus-Request-Id": request_id})
            assert answer.status_code == 201, answer.text
            return temporalio.nexus.WorkflowHandle.from_token(answer.json()["token"]).workflow_id

        first = await start(request_id)
        assert await start(request_id) == first
        await wait_for_status(deployment, first, {"succeeded"})
        assert await start(request_id) == first  # a late retry, after the run ended
        other = await start(str(uuid.uuid4()))

    assert other != first
    assert first.startswith("run_") and len(first) == 26
    executions = [
        execution async for execution in temporal_client.list_workflows(f"WorkflowId = '{first}'")
    ]
    assert len(executions) == 1
    assert (await deployment.get(f"/runs/{other}")).status_code == 200


async def test_a_full_backlog_holds_nexus_starts_back_until_a_run_ends(
    serve: ServeFn, caller: Client, temporal_client: Client
) -> None:
    """A full backlog is the API's 429: for Nexus a retryable error, so the caller's
    server retries the start and the run starts once there is room."""
    name = "nexus-full"
    async with serve("sleepy", deployment=name, max_pending_runs=1) as http:
        endpoint = await ensure_nexus_endpoint(temporal_client, name)
        blocking = await submit(http, {"seconds": 60})
        await wait_for_status(http, blocking, {"running"})
        handle = await caller.start_workflow(
            CallByName.run,
            NamedCall(endpoint, {"parameters": {}}, timeout=60),
            id=call_id(),
            task_queue=CALLER_QUEUE,
        )
        refusal = await pending_start_failure(caller, handle.id)
        assert refusal.endswith("RESOURCE_EXHAUSTED")
        assert "runs queued or running (its limit)" in refusal

        assert (await http.delete(f"/runs/{blocking}")).status_code == 202

        answer = await asyncio.wait_for(handle.result(), timeout=45)
        assert answer["result"]["outputs"]["steps"] == 1


async def pending_start_failure(caller: Client, caller_id: str, timeout: float = 30.0) -> str:
    """Why the caller's pending operation has not started yet (its last attempt)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        description = await caller.get_workflow_handle(caller_id).describe()
        for pending in description.raw_description.pending_nexus_operations:
            assert not pending.operation_token, "started a run over the limit"
            if pending.HasField("last_attempt_failure"):
                failure = pending.last_attempt_failure
                return f"{failure.message} {failure.nexus_handler_failure_info.type}"
        await asyncio.sleep(0.05)
    raise AssertionError(f"{caller_id}'s operation was never refused")


async def test_a_worker_without_the_api_serves_the_nexus_service_too(
    caller: Client, temporal_client: Client
) -> None:
    """As `warmrun serve --no-api` runs it: the worker alone, its own backlog."""
    name = "nexus-worker-only"
    settings = Settings(**{**TEST_SETTINGS, "deployment": name})
    async with running_worker(temporal_client, load_pipeline(f"{PIPELINES}:sleepy"), settings):
        endpoint = await ensure_nexus_endpoint(temporal_client, name)
        answer = await call_by_name(caller, NamedCall(endpoint, {"parameters": {"steps": 2}}))

    assert answer["result"]["outputs"]["steps"] == 2


async def test_the_endpoint_is_named_for_the_deployment_and_created_once(
    temporal_client: Client,
) -> None:
    assert nexus_endpoint_for("my_pipeline.v2") == "warmrun-my-pipeline-v2"
    assert nexus_endpoint_for("sentiment") == "warmrun-sentiment"
    with pytest.raises(ValueError):
        nexus_endpoint_for("__")

    name = await ensure_nexus_endpoint(temporal_client, "endpoint_twice")
    assert await ensure_nexus_endpoint(temporal_client, "endpoint_twice") == name

    listed = await temporal_client.operator_service.list_nexus_endpoints(
        ListNexusEndpointsRequest(name=name)
    )
    [endpoint] = listed.endpoints
    assert endpoint.spec.target.worker.namespace == temporal_client.namespace
    assert endpoint.spec.target.worker.task_queue == "warmrun-endpoint_twice"


def test_the_handler_serves_the_service_callers_import() -> None:
    """Callers type their calls with `WarmrunService`; the handler takes `run`'s input
    as raw JSON (to refuse unknown fields), so the two are checked against each other."""
    imported = nexusrpc.get_service_definition(WarmrunService)
    served = nexusrpc.get_service_definition(RunsNexusHandler)
    assert imported is not None and served is not None
    assert served.name == imported.name == "warmrun"
    assert set(served.operation_definitions) == set(imported.operation_definitions)
    for name, operation in imported.operation_definitions.items():
        assert served.operation_definitions[name].name == operation.name
        assert served.operation_definitions[name].output_type == operation.output_type
