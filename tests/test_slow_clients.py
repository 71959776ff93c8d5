"""Clients that are slow to send, or that hold connections, are bounded (issue 14 #7).

Real `warmrun serve` processes on loopback ports, raw sockets speaking HTTP/1.1 by
hand: slowloris heads, stalled and trickled bodies, silent connections, more
connections than the cap. Timeouts are 1 s here so that each test takes seconds.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from reliability.replicas import Replica
from warmrun.devserver import DevServer, free_port
from warmrun.http_limits import ConnectionLimits, limited_protocol

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
MAX_HEADER_BYTES = 4096
MAX_CONNECTIONS = 3
# A closed connection is seen well within this; a connection still open after it was
# held, which is the defect.
CLOSE_WITHIN = 6.0

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem_code(self) -> str:
        assert self.headers.get("content-type") == "application/problem+json", self
        return str(json.loads(self.body)["code"])


@contextmanager
def started_replica(
    dev_server: DevServer, log_dir: Path, deployment: str, **settings: float
) -> Iterator[Replica]:
    replica = Replica(
        "sleepy",
        deployment=deployment,
        temporal_address=dev_server.address,
        log_dir=log_dir,
        header_timeout=HEADER_TIMEOUT,
        body_timeout=BODY_TIMEOUT,
        **settings,
    ).start()
    try:
        yield replica
    finally:
        replica.stop()


@pytest.fixture(scope="module")
async def guarded(
    dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Replica]:
    """A replica with 1 s header and body timeouts, a 4 KiB head limit and room for
    many connections."""
    with started_replica(
        dev_server,
        tmp_path_factory.mktemp("slow"),
        "slow-clients",
        max_header_bytes=MAX_HEADER_BYTES,
    ) as replica:
        yield await replica.ready()


@pytest.fixture(scope="module")
async def capped(
    dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Replica]:
    """A replica that holds at most `MAX_CONNECTIONS` connections."""
    with started_replica(
        dev_server, tmp_path_factory.mktemp("capped"), "capped", max_connections=MAX_CONNECTIONS
    ) as replica:
        yield await replica.ready()


async def slow_to_read(scope: Scope, receive: Receive, send: Send) -> None:
    """Busy for twice the body timeout before it reads the body (`/read`), or streams
    an answer for four body timeouts (any other path)."""
    assert scope["type"] == "http"
    if scope["path"] == "/read":
        await asyncio.sleep(BODY_TIMEOUT * 2)
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        answer = str(size).encode()
        headers = [(b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for _ in range(4):
        await send({"type": "http.response.body", "body": b" ", "more_body": True})
        await asyncio.sleep(BODY_TIMEOUT)
    await send({"type": "http.response.body", "body": b"done"})


@pytest.fixture(scope="module")
async def protocol_only() -> AsyncIterator[int]:
    """warmrun's HTTP protocol under uvicorn, serving `slow_to_read`: for what
    warmrun's own app never does (reading its body late). Yields the port."""
    limits = ConnectionLimits(header_timeout=HEADER_TIMEOUT, body_timeout=BODY_TIMEOUT)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(slow_to_read, port=port, log_level="warning", http=limited_protocol(limits))
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.02)
    yield port
    server.should_exit = True
    await serving


@asynccontextmanager
async def connection(replica: Replica | int) -> AsyncIterator[Streams]:
    port = replica if isinstance(replica, int) else replica.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with suppress(OSError):  # the server reset it: closed all the same
            await writer.wait_closed()


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One response with a Content-Length body (what warmrun's own answers carry)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLOSE_WITHIN)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines if line)
    }
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), CLOSE_WITHIN)
    return Answer(int(status_line.split()[1]), headers, body)


async def closed_after(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took; fails if
    the connection is still open after `CLOSE_WITHIN` seconds."""
    started = time.monotonic()
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), CLOSE_WITHIN):
            received += chunk
    except TimeoutError:
        raise AssertionError(
            f"the server held the connection for {CLOSE_WITHIN} s; got {received[:200]!r}"
        ) from None
    except ConnectionResetError:
        pass
    return received, time.monotonic() - started


async def trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """Send `data` a byte at a time, as a slowloris client does, until it is cut off."""
    try:
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every)
    except OSError:
        pass


def parse(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines if line)
    }
    return Answer(int(status_line.split()[1]), headers, body)


def invoke_head(length: int) -> bytes:
    return (
        "POST /invoke HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Prefer: respond-async\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def test_slowloris_clients_are_answered_408_and_closed_after_the_header_timeout(
    guarded: Replica,
) -> None:
    endless_head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"a" * 1000

    async def slowloris() -> tuple[bytes, float]:
        async with connection(guarded) as (reader, writer):
            sending = asyncio.create_task(trickle(writer, endless_head, every=0.2))
            try:
                return await closed_after(reader)
            finally:
                sending.cancel()

    outcomes = await asyncio.gather(*(slowloris() for _ in range(30)))

    for received, seconds in outcomes:
        assert HEADER_TIMEOUT * 0.9 <= seconds < HEADER_TIMEOUT + 3, seconds
        answer = parse(received)
        assert answer.status == 408
        assert answer.headers["connection"] == "close"
        assert json.loads(answer.body)["code"] == "request_timeout"
    async with httpx.AsyncClient(base_url=guarded.url) as http:
        assert (await http.get("/health")).status_code == 200


async def test_a_connection_that_sends_nothing_is_closed(guarded: Replica) -> None:
    async with connection(guarded) as (reader, _):
        received, seconds = await closed_after(reader)

    assert received == b""  # nothing was asked, so nothing is answered
    assert HEADER_TIMEOUT * 0.9 <= seconds < HEADER_TIMEOUT + 3


async def test_a_stalled_body_is_answered_408_and_closed(guarded: Replica) -> None:
    body = json.dumps({"parameters": {"seconds": 0}}).encode()
    async with connection(guarded) as (reader, writer):
        writer.write(invoke_head(len(body)) + body[:5])  # and then nothing more
        received, seconds = await closed_after(reader)

    answer = parse(received)
    assert answer.status == 408
    assert answer.problem_code() == "request_timeout"
    assert BODY_TIMEOUT * 0.9 <= seconds < BODY_TIMEOUT + 3
    assert "Traceback" not in guarded.tail(200)


async def test_a_body_trickled_slower_than_the_body_timeout_is_cut(guarded: Replica) -> None:
    body = json.dumps({"parameters": {"seconds": 0}}).encode()
    async with connection(guarded) as (reader, writer):
        writer.write(invoke_head(len(body)))
        sending = asyncio.create_task(trickle(writer, body, every=BODY_TIMEOUT * 2))
        try:
            received, _ = await closed_after(reader)
        finally:
            sending.cancel()

    assert parse(received).problem_code() == "request_timeout"


async def test_a_body_that_keeps_coming_is_read_however_long_it_takes(guarded: Replica) -> None:
    body = json.dumps({"parameters": {"seconds": 0, "marker": None}}).encode()
    chunks = [body[index : index + 8] for index in range(0, len(body), 8)]
    assert len(chunks) * BODY_TIMEOUT / 2 > BODY_TIMEOUT * 2  # longer than two timeouts

    async with connection(guarded) as (reader, writer):
        writer.write(invoke_head(len(body)))
        for chunk in chunks:
            await asyncio.sleep(BODY_TIMEOUT / 2)
            writer.write(chunk)
            await writer.drain()
        answer = await read_answer(reader)

    assert answer.status == 202, answer


async def test_an_unread_body_still_trickling_after_the_answer_is_cut(guarded: Replica) -> None:
    """`GET /health` answers without reading the body its client announced; the
    client then trickles that body, which must not hold the connection either."""
    async with connection(guarded) as (reader, writer):
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n")
        assert (await read_answer(reader)).status == 200
        sending = asyncio.create_task(trickle(writer, b"x" * 1000, every=BODY_TIMEOUT * 2))
        try:
            received, _ = await closed_after(reader)
        finally:
            sending.cancel()

    assert received == b""


@pytest.mark.parametrize("complete", [False, True], ids=["still-coming", "complete"])
async def test_a_head_over_max_header_bytes_is_refused_431(
    guarded: Replica, complete: bool
) -> None:
    """One write of a few KiB reaches the server in one read: a complete head is then
    measured as parsed, an incomplete one by the bytes buffered for it."""
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * MAX_HEADER_BYTES
    async with connection(guarded) as (reader, writer):
        writer.write(head + (b"\r\n\r\n" if complete else b""))
        received, _ = await closed_after(reader)

    answer = parse(received)
    assert answer.status == 431
    assert answer.problem_code() == "headers_too_large"


async def test_a_head_under_max_header_bytes_is_served(guarded: Replica) -> None:
    async with httpx.AsyncClient(base_url=guarded.url) as http:
        answer = await http.get("/health", headers={"X-Big": "a" * (MAX_HEADER_BYTES - 500)})
    assert answer.status_code == 200


def test_the_open_files_limit_is_raised_to_fit_the_connection_cap() -> None:
    """In a child process, whose limits the test's own process does not share."""
    script = (
        "import resource\n"
        "from warmrun.server import FILES_BESIDES_CONNECTIONS, _ensure_file_limit\n"
        "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (300, hard))\n"
        "_ensure_file_limit(1000)\n"
        "soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "print(soft, min(1000 + FILES_BESIDES_CONNECTIONS, hard))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    soft, expected = done.stdout.split()
    assert int(soft) == int(expected) > 300


async def test_a_long_sync_invoke_is_not_cut_by_the_timeouts(guarded: Replica) -> None:
    seconds = (HEADER_TIMEOUT + BODY_TIMEOUT) * 1.5
    async with httpx.AsyncClient(base_url=guarded.url, timeout=60) as http:
        started = time.monotonic()
        answer = await http.post("/invoke", json={"parameters": {"seconds": seconds}})
        took = time.monotonic() - started
        # The same connection then serves the next request: it was kept alive.
        assert (await http.get("/health")).status_code == 200

    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"]["steps"] == 1
    assert took >= seconds


async def test_a_kept_alive_connection_outlives_the_header_timeout(guarded: Replica) -> None:
    """The header timeout runs from a request's first byte, not from the last answer:
    an idle kept-alive connection is the keep-alive timeout's business (75 s)."""
    async with connection(guarded) as (reader, writer):
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await read_answer(reader)).status == 200
        await asyncio.sleep(HEADER_TIMEOUT * 2.5)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await read_answer(reader)).status == 200


async def test_connections_over_the_cap_are_refused_503_with_retry_after(capped: Replica) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    held: list[Streams] = []
    try:
        deadline = time.monotonic() + 10
        while len(held) < MAX_CONNECTIONS:
            reader, writer = await asyncio.open_connection("127.0.0.1", capped.port)
            writer.write(request)
            answer = await read_answer(reader)
            if answer.status == 200:
                held.append((reader, writer))  # kept alive: it keeps its place
                continue
            # Only until the server has let go of connections before this test's.
            writer.close()
            assert time.monotonic() < deadline, f"refused below the cap: {answer}"
            await asyncio.sleep(0.1)

        async with connection(capped) as (reader, writer):
            writer.write(request)
            refused = await read_answer(reader)
            assert await asyncio.wait_for(reader.read(), CLOSE_WITHIN) == b""  # then closed
        assert refused.status == 503
        assert refused.problem_code() == "too_many_connections"
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["connection"] == "close"

        # The connections it holds go on serving.
        reader, writer = held[0]
        writer.write(request)
        assert (await read_answer(reader)).status == 200

        # A place freed is taken again (once the server has seen the close).
        held.pop()[1].close()
        deadline = time.monotonic() + 10
        while True:
            async with connection(capped) as (reader, writer):
                writer.write(request)
                if (await read_answer(reader)).status == 200:
                    break
            assert time.monotonic() < deadline, "a freed place was never taken again"
            await asyncio.sleep(0.1)
    finally:
        for _, writer in held:
            writer.close()


async def test_time_the_app_takes_to_read_a_body_is_not_the_clients(protocol_only: int) -> None:
    """Past 64 KiB buffered the server stops reading until the app asks for more."""
    body = b"x" * 1_000_000
    async with connection(protocol_only) as (reader, writer):
        writer.write(b"POST /read HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n")
        writer.write(body)
        answer = await read_answer(reader)

    assert (answer.status, answer.body) == (200, b"1000000")


async def test_a_client_waiting_for_100_continue_is_not_cut(protocol_only: int) -> None:
    async with connection(protocol_only) as (reader, writer):
        writer.write(
            b"POST /read HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLOSE_WITHIN)
        assert interim.startswith(b"HTTP/1.1 100 ")
        # Told to go on once the app reads (two body timeouts after the head): the
        # client's clock starts there, not at the head nor at a timer tick before it.
        await asyncio.sleep(BODY_TIMEOUT / 2)
        writer.write(b"hello")
        answer = await read_answer(reader)

    assert (answer.status, answer.body) == (200, b"5")


async def test_a_slow_pipelined_head_waits_for_the_answer_before_it_then_closes(
    protocol_only: int,
) -> None:
    """The answer streaming on the connection (four body timeouts long) is delivered
    whole; the slowloris request pipelined behind it is not served."""
    async with connection(protocol_only) as (reader, writer):
        writer.write(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sending = asyncio.create_task(
            trickle(writer, b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X" * 100, 0.2)
        )
        try:
            received, seconds = await closed_after(reader)
        finally:
            sending.cancel()

    assert received.count(b"HTTP/1.1 200") == 1
    assert received.endswith(b"4\r\ndone\r\n0\r\n\r\n")
    assert seconds >= BODY_TIMEOUT * 4 * 0.9
