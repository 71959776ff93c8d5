"""Caller workflows of another Temporal application, calling a deployment over Nexus.

They run in a namespace of their own (the tests create it), in the SDK's default
sandbox, importing only what a caller imports: `warmrun.temporal`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError, NexusOperationError

with workflow.unsafe.imports_passed_through():
    import nexusrpc

    from warmrun.temporal import (
        GetRunInput,
        PipelineRunInput,
        PipelineRunResult,
        WarmrunService,
        nexus_run_id,
    )


@dataclass
class TypedCall:
    endpoint: str
    input: PipelineRunInput
    timeout: float = 60.0


@dataclass
class TypedOutcome:
    run_id: str
    result: PipelineRunResult


@dataclass
class NamedCall:
    """What another SDK sends: the service and operation by name, plain JSON."""

    endpoint: str
    input: dict[str, Any] = field(default_factory=dict)
    timeout: float = 60.0
    operation: str = "run"


def failure_chain(err: BaseException) -> list[dict[str, Any]]:
    """The error and its causes, as the caller sees them."""
    chain = []
    current: BaseException | None = err
    while current is not None:
        link: dict[str, Any] = {"class": type(current).__name__, "message": str(current)}
        if isinstance(current, ApplicationError):
            link |= {
                "type": current.type,
                "non_retryable": current.non_retryable,
                "details": list(current.details),
            }
        if isinstance(current, nexusrpc.HandlerError):
            link |= {"handler_error": current.type.name, "retryable": current.retryable}
        chain.append(link)
        current = current.__cause__
    return chain


@workflow.defn
class CallRunTyped:
    @workflow.run
    async def run(self, call: TypedCall) -> TypedOutcome:
        warmrun = workflow.create_nexus_client(service=WarmrunService, endpoint=call.endpoint)
        operation = await warmrun.start_operation(
            WarmrunService.run,
            call.input,
            schedule_to_close_timeout=timedelta(seconds=call.timeout),
        )
        return TypedOutcome(run_id=nexus_run_id(operation), result=await operation)


@workflow.defn
class CallByName:
    """Answers the operation's result, or the failure it ended with."""

    @workflow.run
    async def run(self, call: NamedCall) -> dict[str, Any]:
        warmrun = workflow.create_nexus_client(service="warmrun", endpoint=call.endpoint)
        try:
            result = await warmrun.execute_operation(
                call.operation,
                call.input,
                output_type=dict,
                schedule_to_close_timeout=timedelta(seconds=call.timeout),
            )
        except NexusOperationError as err:
            return {"failure": failure_chain(err)}
        return {"result": result}


@workflow.defn
class GetRun:
    @workflow.run
    async def run(self, endpoint: str, run_id: str) -> dict[str, Any]:
        warmrun = workflow.create_nexus_client(service=WarmrunService, endpoint=endpoint)
        try:
            run = await warmrun.execute_operation(
                WarmrunService.get,
                GetRunInput(run_id=run_id),
                schedule_to_close_timeout=timedelta(seconds=60),
            )
        except NexusOperationError as err:
            return {"failure": failure_chain(err)}
        return {"run": run}


CALLERS = [CallRunTyped, CallByName, GetRun]
