"""Webhooks against a real receiver on loopback: signed, retried by Temporal, guarded."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from temporalio.client import Client

from conftest import wait_for_status
from test_validation import assert_problem
from warmrun.devserver import free_port
from warmrun.webhooks import new_secret, verify_webhook

SECRET = new_secret()


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """Records every delivery; answers with the scripted statuses, then 200."""

    url: str
    deliveries: list[Delivery] = field(default_factory=list)
    script: list[int] = field(default_factory=list)

    def of(self, event: str) -> list[Delivery]:
        import json

        return [d for d in self.deliveries if json.loads(d.body)["event"] == event]

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < count:
            assert time.monotonic() < deadline, f"{len(self.deliveries)} deliveries"
            await asyncio.sleep(0.05)
        return self.deliveries


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    hook = Receiver(url=f"http://127.0.0.1:{port}/hook")

    async def record(request: Request) -> Response:
        hook.deliveries.append(Delivery(dict(request.headers), await request.body(), time.time()))
        status = hook.script.pop(0) if hook.script else 200
        return Response(status_code=status)

    app = Starlette(routes=[Route("/hook", record, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    yield hook
    server.should_exit = True
    await task


@pytest.fixture(scope="module")
async def hooked(serve) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(
        "sleepy",
        deployment="hooked",
        webhook_secret=SECRET,
        webhook_allowed_hosts="127.0.0.1",
    ) as http:
        yield http


async def invoke_with_callback(
    http: httpx.AsyncClient, receiver: Receiver, parameters: dict[str, Any], **body: Any
) -> httpx.Response:
    return await http.post(
        "/invoke", json={"parameters": parameters, "callback_url": receiver.url, **body}
    )


async def test_terminal_event_is_signed_and_carries_the_run(
    hooked: httpx.AsyncClient, receiver: Receiver
) -> None:
    answer = await invoke_with_callback(hooked, receiver, {"steps": 2}, run_name="hooked-run")
    run_id = answer.headers["X-Run-Id"]

    [delivery] = await receiver.wait_for(1)

    payload = verify_webhook(delivery.body, delivery.headers, SECRET)
    assert payload["event"] == "succeeded"
    assert payload["run_id"] == run_id
    assert payload["status"] == "succeeded"
    assert payload["run_name"] == "hooked-run"
    assert payload["outputs"]["steps"] == 2
    assert payload["links"]["self"] == f"/runs/{run_id}"
    assert delivery.headers["webhook-id"] == f"{run_id}.webhook.succeeded"
    assert delivery.headers["webhook-signature"].startswith("v1,")
    with pytest.raises(Exception, match="ignature"):
        verify_webhook(delivery.body, delivery.headers, new_secret())

    run = await wait_for_status(
        hooked, run_id, {"succeeded"}, until=lambda run: run["webhook"]["state"] == "delivered"
    )
    assert run["webhook"]["url"] == receiver.url
    assert run["webhook"]["attempts"] == 1
    assert run["webhook"]["delivered_at"]


async def test_a_500_is_retried_with_the_same_webhook_id(
    hooked: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.script = [500]
    answer = await invoke_with_callback(hooked, receiver, {"fail": "bad batch"})
    run_id = answer.headers["X-Run-Id"]

    first, second = await receiver.wait_for(2)

    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert verify_webhook(second.body, second.headers, SECRET)["event"] == "failed"
    run = await wait_for_status(
        hooked, run_id, {"failed"}, until=lambda run: run["webhook"]["state"] == "delivered"
    )
    assert run["status"] == "failed"  # the delivery's trouble never changes the run
    assert run["webhook"]["attempts"] == 2


async def test_410_stops_deliveries(hooked: httpx.AsyncClient, receiver: Receiver) -> None:
    receiver.script = [410]
    answer = await invoke_with_callback(hooked, receiver, {})
    run_id = answer.headers["X-Run-Id"]

    await receiver.wait_for(1)
    run = await wait_for_status(
        hooked, run_id, {"succeeded"}, until=lambda run: run["webhook"]["state"] == "gone"
    )
    await asyncio.sleep(1.5)
    assert len(receiver.deliveries) == 1
    assert run["webhook"]["attempts"] == 1
    assert "410" in run["webhook"]["last_error"]


async def test_started_and_throttled_progress_events(
    hooked: httpx.AsyncClient, receiver: Receiver
) -> None:
    answer = await invoke_with_callback(
        hooked,
        receiver,
        {"seconds": 3, "steps": 12},
        callback_events=["started", "progress", "succeeded"],
    )
    assert answer.json()["success"] is True
    await asyncio.sleep(1.5)  # deliveries are asynchronous to the run

    assert len(receiver.of("started")) == 1
    assert len(receiver.of("succeeded")) == 1
    progress = receiver.of("progress")
    assert 1 <= len(progress) <= 4  # 12 steps in 3 s, at most one event a second
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(progress)]
    # Sent at least a second apart; arrival adds some jitter of its own.
    assert all(gap >= 0.5 for gap in gaps), gaps
    assert len({d.headers["webhook-id"] for d in receiver.deliveries}) == len(receiver.deliveries)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://localhost:9/hook",
        "http://[::1]/hook",
    ],
)
async def test_refused_targets_are_422_at_submit(hooked: httpx.AsyncClient, url: str) -> None:
    answer = await hooked.post("/invoke", json={"parameters": {}, "callback_url": url})

    assert_problem(answer, 422, "callback_url_refused")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://example.com/", "http://"])
async def test_non_http_targets_are_invalid(hooked: httpx.AsyncClient, url: str) -> None:
    answer = await hooked.post("/invoke", json={"parameters": {}, "callback_url": url})

    problem = assert_problem(answer, 422, "validation_error")
    assert problem["errors"][0]["loc"] == ["body", "callback_url"]


async def test_the_target_is_checked_again_at_delivery(
    hooked: httpx.AsyncClient, temporal_client: Client, receiver: Receiver
) -> None:
    # Started around the API (which would refuse it): 127.0.0.2 is loopback, not allowed.
    refused = receiver.url.replace("127.0.0.1", "127.0.0.2")
    handle = await temporal_client.start_workflow(
        "PipelineRun",
        {"parameters": {}, "callback_url": refused},
        id=f"sneaky-{time.time_ns()}",
        task_queue="warmrun-hooked",
    )
    await handle.result()

    run = await wait_for_status(
        hooked, handle.id, {"succeeded"}, until=lambda run: run["webhook"]["state"] == "refused"
    )
    assert "127.0.0.2" in run["webhook"]["last_error"]
    assert receiver.deliveries == []


async def test_without_a_secret_callbacks_are_refused(sleepy: httpx.AsyncClient) -> None:
    answer = await sleepy.post(
        "/invoke", json={"parameters": {}, "callback_url": "https://example.com/hook"}
    )

    assert_problem(answer, 422, "webhooks_disabled")


def test_several_secrets_sign_so_receivers_can_rotate() -> None:
    from datetime import UTC, datetime

    from warmrun.webhooks import signature_headers

    old, new = new_secret(), new_secret()
    body = '{"event":"succeeded"}'
    headers = signature_headers([old, new], "msg-1", datetime.now(UTC), body)

    assert len(headers["webhook-signature"].split()) == 2
    assert verify_webhook(body, headers, old) == {"event": "succeeded"}
    assert verify_webhook(body, headers, new) == {"event": "succeeded"}
    with pytest.raises(Exception, match="ignature"):
        verify_webhook(body, headers, new_secret())
