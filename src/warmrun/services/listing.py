"""Listing a deployment's runs, from Temporal visibility.

Visibility cannot tell queued from running nor a timeout from a failure, so open runs
are described and closed ones read their memo; a page filtered on such a status may
therefore hold fewer than `limit` runs (follow `next_page_token`).

Page tokens are visibility's own, wrapped: `v1.` + base64url of a 16-byte tag and
Temporal's token, the tag an HMAC of the token and the query it continues (task queue
and status filter). A token that was altered, truncated, made up, or handed out for
another status filter is refused (`InvalidPageToken`) without asking Temporal: Temporal
answers such tokens "unknown" and the SDK retries that for ~10 s before giving up. The
key is not secret (every replica derives the same one from the deployment's namespace
and task queue), so the tag proves no authorship: it only keeps a careless client's
token from costing the server. A forged tag still reaches visibility, whose refusal is
mapped to `InvalidPageToken` as well.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

from temporalio.client import WorkflowExecution, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from warmrun.deployment import Deployment
from warmrun.resource import Run
from warmrun.run import RunMemo, RunStatus, runs_query
from warmrun.services.errors import InvalidPageToken, RunNotFound
from warmrun.services.read import closed_as, describe_run, links_of, run_of, status_when_closed


@dataclass
class RunPage:
    runs: list[Run]
    next_page_token: str | None


async def list_runs(
    deployment: Deployment, status: RunStatus | None, limit: int, page_token: str | None
) -> RunPage:
    """A page of this deployment's runs: open runs first, newest first, then ended
    runs, most recently ended first (visibility's order)."""
    query = runs_query(deployment.task_queue, status)
    key = _token_key(deployment)
    executions = deployment.client.list_workflows(
        query,
        page_size=limit,
        next_page_token=_unwrap(key, query, page_token) if page_token else None,
    )
    try:
        await executions.fetch_next_page()
    except RPCError as err:
        # A token the server cannot read is the caller's: visibility answers "invalid
        # argument" or, for some malformed tokens, "unknown".
        if page_token is not None and err.status in (
            RPCStatusCode.INVALID_ARGUMENT,
            RPCStatusCode.UNKNOWN,
        ):
            raise InvalidPageToken() from None
        raise
    page = list(executions.current_page or [])
    runs = await asyncio.gather(*(_listed(deployment, execution) for execution in page))
    return RunPage(
        runs=[run for run in runs if run is not None and (status is None or run.status == status)],
        next_page_token=_wrap(key, query, executions.next_page_token)
        if executions.next_page_token
        else None,
    )


TOKEN_PREFIX = "v1."
TAG_BYTES = 16


def _token_key(deployment: Deployment) -> bytes:
    return hashlib.sha256(
        f"warmrun page token\0{deployment.namespace}\0{deployment.task_queue}".encode()
    ).digest()


def _tag(key: bytes, query: str, token: bytes) -> bytes:
    return hmac.digest(key, query.encode() + b"\0" + token, "sha256")[:TAG_BYTES]


def _wrap(key: bytes, query: str, token: bytes) -> str:
    packed = _tag(key, query, token) + token
    return TOKEN_PREFIX + base64.urlsafe_b64encode(packed).rstrip(b"=").decode()


def _unwrap(key: bytes, query: str, page_token: str) -> bytes:
    """Temporal's token inside one of ours, or `InvalidPageToken`."""
    if not page_token.startswith(TOKEN_PREFIX):
        raise InvalidPageToken()
    encoded = page_token.removeprefix(TOKEN_PREFIX)
    try:
        padded = encoded + "=" * (-len(encoded) % 4)
        packed = base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidPageToken() from None
    tag, token = packed[:TAG_BYTES], packed[TAG_BYTES:]
    if not token or not hmac.compare_digest(tag, _tag(key, query, token)):
        raise InvalidPageToken()
    return token


async def _listed(deployment: Deployment, execution: WorkflowExecution) -> Run | None:
    if execution.status == WorkflowExecutionStatus.RUNNING:
        try:
            description = await describe_run(deployment, execution.id)
        except RunNotFound:  # deleted meanwhile
            return None
        return await run_of(deployment, description)
    memo = RunMemo.from_memo(await execution.memo(), closed_as(execution.status))
    return Run(
        run_id=execution.id,
        run_name=memo.run_name,
        pipeline_name=deployment.pipeline.name,
        deployment_name=deployment.name,
        status=status_when_closed(execution.status, memo),
        created_at=execution.start_time,
        finished_at=execution.close_time,
        links=links_of(deployment, execution.id),
        zenml_run_id=memo.zenml_run.run_id if memo.zenml_run else None,
    )
