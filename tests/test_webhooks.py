"""Webhooks against a real receiver on loopback: signed, retried by Temporal, guarded.

Every target here is on loopback. Refusals of other networks are tested on the guard
alone (test_webhook_targets.py); refused loopback targets here point at a real
listener (`bystander`) that records every connection, to prove none was made.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
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


@dataclass
class Bystander:
    """Listens on loopback addresses no test deployment may call; records connections."""

    port: int
    connections: list[str]

    def url(self, host: str) -> str:
        return f"http://{host}:{self.port}/hook"


BYSTANDER_ADDRESSES = ("127.0.0.1", "127.0.0.2", "::1")


@pytest.fixture(scope="module")
async def bystander() -> AsyncIterator[Bystander]:
    connections: list[str] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer.get_extra_info("sockname")[0])
        writer.close()

    for _ in range(20):  # one port free on all three addresses
        try:
            port = free_port("127.0.0.2")
            server = await asyncio.start_server(record, list(BYSTANDER_ADDRESSES), port)
            break
        except OSError:
            continue
    else:
        pytest.fail("no port free on 127.0.0.1, 127.0.0.2 and ::1 at once")
    # It does record what reaches it: one connection to each address, then a clean slate.
    for address in BYSTANDER_ADDRESSES:
        _, writer = await asyncio.open_connection(address, port)
        writer.close()
    deadline = time.monotonic() + 5
    while len(connections) < len(BYSTANDER_ADDRESSES):
        assert time.monotonic() < deadline, connections
        await asyncio.sleep(0.02)
    assert sorted(connections) == sorted(BYSTANDER_ADDRESSES)
    connections.clear()
    yield Bystander(port, connections)
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.2",
        "[::ffff:127.0.0.2]",
        "0x7f000002",
        "2130706434",
        "127.2",
        "0177.0.0.2",
        "[::1]",
        "localhost",  # only the literal 127.0.0.1 is allowed on this deployment
    ],
)
async def test_loopback_targets_are_refused_at_submit(
    hooked: httpx.AsyncClient, bystander: Bystander, host: str
) -> None:
    answer = await hooked.post(
        "/invoke", json={"parameters": {}, "callback_url": bystander.url(host)}
    )

    problem = assert_problem(answer, 422, "callback_url_refused")
    assert "Loopback" in problem["detail"]
    assert problem["errors"][0]["loc"] == ["body", "callback_url"]
    assert bystander.connections == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://example.com/", "http://"])
async def test_non_http_targets_are_invalid(hooked: httpx.AsyncClient, url: str) -> None:
    answer = await hooked.post("/invoke", json={"parameters": {}, "callback_url": url})

    problem = assert_problem(answer, 422, "validation_error")
    assert problem["errors"][0]["loc"] == ["body", "callback_url"]


# Only forms that even a guard failing open would not look up in DNS (a lookup leaves
# this machine); the rest are refused on the guard alone (test_webhook_targets.py).
@pytest.mark.parametrize(
    "url",
    [
        "http://[::1/",
        "http://[::1]x/",
        "http://[127.0.0.1]/",
        "http://127.0.0.1:0/",
        "http://127.0.0.1:99999/",
        "http://127.0.0.1:8o/",
        "http://:80/",
        f"http://{'a' * 64}.localhost/",
        "http://a..localhost/",
    ],
)
async def test_a_malformed_callback_url_is_a_422_not_a_500(
    hooked: httpx.AsyncClient, url: str
) -> None:
    answer = await hooked.post("/invoke", json={"parameters": {}, "callback_url": url})

    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] in {"callback_url_refused", "validation_error"}


@pytest.mark.parametrize("host", ["127.0.0.2", "[::ffff:127.0.0.2]", "0x7f000002", "[::1]"])
async def test_the_target_is_checked_again_at_delivery(
    hooked: httpx.AsyncClient, temporal_client: Client, bystander: Bystander, host: str
) -> None:
    # Started around the API (which would refuse it): loopback, and not the allowed host.
    handle = await temporal_client.start_workflow(
        "PipelineRun",
        {"parameters": {}, "callback_url": bystander.url(host)},
        id=f"sneaky-{time.time_ns()}",
        task_queue="warmrun-hooked",
    )
    await handle.result()

    run = await wait_for_status(
        hooked, handle.id, {"succeeded"}, until=lambda run: run["webhook"]["state"] == "refused"
    )
    assert "127.0.0.0/8 (Loopback" in run["webhook"]["last_error"] or (
        "::1/128 (Loopback" in run["webhook"]["last_error"]
    )
    assert bystander.connections == []


MiB = 1024 * 1024


@dataclass
class Flood:
    """A raw HTTP receiver whose reply has a huge body; counts what it managed to send."""

    url: str
    status: int
    size: int
    pause: float
    sent: int = 0
    requests: int = 0
    cut_off: bool = False
    """The client hung up before the whole body went out."""
    done: asyncio.Event = field(default_factory=asyncio.Event)


FloodFn = Callable[..., Awaitable[Flood]]


@pytest.fixture
async def flood() -> AsyncIterator[FloodFn]:
    servers: list[asyncio.Server] = []

    async def start(status: int, size: int, pause: float = 0.0) -> Flood:
        port = free_port()
        hook = Flood(f"http://127.0.0.1:{port}/hook", status, size, pause)
        chunk = (b"flooding reply " * 4370)[: 64 * 1024]

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            hook.requests += 1
            writer.write(
                f"HTTP/1.1 {status} Flood\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {size}\r\n\r\n".encode()
            )
            try:
                while hook.sent < size:
                    piece = chunk[: size - hook.sent]
                    writer.write(piece)
                    await writer.drain()
                    hook.sent += len(piece)
                    if pause:
                        await asyncio.sleep(pause)
            except ConnectionError:
                hook.cut_off = True
            finally:
                writer.close()
                hook.done.set()

        servers.append(await asyncio.start_server(answer, "127.0.0.1", port))
        return hook

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_a_huge_slow_reply_is_not_read(hooked: httpx.AsyncClient, flood: FloodFn) -> None:
    # 300 MB at ~1.3 MB/s: reading it all would take four minutes.
    hook = await flood(status=200, size=300 * 1000 * 1000, pause=0.05)

    answer = await hooked.post("/invoke", json={"parameters": {}, "callback_url": hook.url})
    run_id = answer.headers["X-Run-Id"]

    run = await wait_for_status(
        hooked, run_id, {"succeeded"}, until=lambda run: run["webhook"]["state"] == "delivered"
    )
    await asyncio.wait_for(hook.done.wait(), 10)
    assert hook.cut_off  # the worker hung up on it
    assert run["webhook"]["attempts"] == 1
    assert hook.requests == 1
    assert hook.sent < 4 * MiB, hook.sent


async def test_a_huge_error_reply_is_read_only_in_part(
    hooked: httpx.AsyncClient, flood: FloodFn
) -> None:
    # As fast as loopback goes: what got out is what the socket buffers took.
    hook = await flood(status=400, size=64 * MiB)

    answer = await hooked.post("/invoke", json={"parameters": {}, "callback_url": hook.url})
    run_id = answer.headers["X-Run-Id"]

    run = await wait_for_status(
        hooked, run_id, {"succeeded"}, until=lambda run: run["webhook"]["state"] == "rejected"
    )
    await asyncio.wait_for(hook.done.wait(), 10)
    assert hook.cut_off
    assert hook.sent < 16 * MiB, hook.sent
    error = run["webhook"]["last_error"]
    assert "answered 400: 'flooding reply flooding reply" in error
    assert len(error) < 300, error


@pytest.fixture(scope="module")
async def hooked_briefly(serve) -> AsyncIterator[httpx.AsyncClient]:
    """Webhook attempts of one second, retried every second for half a minute."""
    async with serve(
        "sleepy",
        deployment="hooked-briefly",
        webhook_secret=SECRET,
        webhook_allowed_hosts="127.0.0.1",
        webhook_attempt_timeout=1.0,
        webhook_max_interval=1.0,
        webhook_retry_window=30.0,
    ) as http:
        yield http


async def test_a_reply_that_drips_is_cut_off_at_the_attempt_timeout(
    hooked_briefly: httpx.AsyncClient,
) -> None:
    cut_off = asyncio.Event()

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
        try:
            while True:  # a header byte every 0.2 s: no single read ever times out
                writer.write(b"z")
                await writer.drain()
                await asyncio.sleep(0.2)
        except ConnectionError:
            cut_off.set()
        finally:
            writer.close()

    port = free_port()
    server = await asyncio.start_server(drip, "127.0.0.1", port)
    try:
        answer = await hooked_briefly.post(
            "/invoke",
            json={"parameters": {}, "callback_url": f"http://127.0.0.1:{port}/hook"},
        )
        run = await wait_for_status(
            hooked_briefly,
            answer.headers["X-Run-Id"],
            {"succeeded"},
            until=lambda run: (
                "no complete answer within 1 s" in (run["webhook"]["last_error"] or "")
            ),
        )
        await asyncio.wait_for(cut_off.wait(), 5)
    finally:
        server.close()
        await server.wait_closed()
    assert run["webhook"]["state"] in {"retrying", "delivering", "failed"}


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
