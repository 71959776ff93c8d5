"""What one HTTP client may hold: time to send a request, head size, connections.

uvicorn (0.54) bounds none of it: its keep-alive timer starts only after a first
response and any byte received cancels it, so a client that trickles its headers a
byte at a time, stalls its body, or connects and sends nothing holds its connection
forever. httptools buffers a request head of any size (20 MB were accepted), and
`limit_concurrency` refuses only once a request head is complete (so never a
slowloris client) with a plain-text 503 and no `Retry-After`.

`LimitedHttpProtocol` is uvicorn's own httptools protocol plus one deadline per
connection, always measured from what the client has to send:

- a request head (line and headers) must arrive within `header_timeout` of the
  connection opening or of the request's first byte; a kept-alive connection idles
  under uvicorn's keep-alive timeout until that byte;
- a request body may pause at most `body_timeout` between two pieces, counted from
  the later of the last piece and the app's last read: time spent while the app is
  not reading (flow control paused, or `Expect: 100-continue` not answered yet) does
  not count against the client;
- a head over `max_header_bytes` is refused `431`;
- the connections a process holds are at most `max_connections`: one over that is
  answered `503 too_many_connections` with `Retry-After` and closed.

A response is never cut for taking long: the sync `/invoke` answer may stream for
hours (a slow head pipelined behind it closes the connection once it is delivered).
Answers are problem+json, like every other warmrun error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from starlette.types import Receive, Scope, Send
from uvicorn._types import ASGIReceiveEvent
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from warmrun.api.problems import Problem, problem_response
from warmrun.settings import Settings

logger = logging.getLogger(__name__)

REFUSED_RETRY_AFTER = 1
"""Seconds a refused client should wait: places free up as soon as a slow client is cut."""

LOG_EVERY = 10.0
"""Least seconds between two log lines about cut or refused clients: a flood of slow
clients must not flood the log as well."""


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_header_bytes: int = 64 * 1024
    max_connections: int = 2000

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            max_header_bytes=settings.max_header_bytes,
            max_connections=settings.max_connections,
        )


class _Tally:
    """Counts what was done to clients and logs the counts at most every `LOG_EVERY` s
    (the first at once, the rest summed up when that interval has passed)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._logged = -LOG_EVERY
        self._flush: asyncio.TimerHandle | None = None

    def note(self, what: str) -> None:
        self._counts[what] += 1
        wait = self._logged + LOG_EVERY - time.monotonic()
        if wait <= 0:
            self._log()
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(wait, self._log)

    def _log(self) -> None:
        self._flush = None
        self._logged = time.monotonic()
        if self._counts:
            summary = ", ".join(f"{count} {name}" for name, count in sorted(self._counts.items()))
            logger.warning("HTTP clients cut or refused: %s", summary)
            self._counts.clear()


_tally = _Tally()


class LimitedHttpProtocol(HttpToolsProtocol):
    """Build one with `limited_protocol(limits)`; uvicorn makes one per connection."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._awaiting_head = True  # the next bytes belong to a request head
        self._head_bytes = 0
        self._head_begun = False
        self._reading_body = False
        self._message_ended = False  # within one `data_received`
        self._body_progress = 0.0  # loop time of the last piece of body

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            # Answered once its request head is in, so that the client reads a clear
            # refusal instead of a reset; it has the header timeout to send it.
            self.app = _answer(
                Problem(
                    503,
                    "too_many_connections",
                    f"this replica holds its maximum of {self.limits.max_connections} "
                    "connections (WARMRUN_MAX_CONNECTIONS); retry shortly or on another replica",
                    headers={"Retry-After": str(REFUSED_RETRY_AFTER)},
                )
            )
            _tally.note("refused over WARMRUN_MAX_CONNECTIONS")
        self._arm(self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the WebSocket protocol takes the connection over
        super().handle_websocket_upgrade()

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head and self._deadline is None:
            # The first byte of a kept-alive connection's next request starts its clock.
            self._arm(self.limits.header_timeout, self._head_timed_out)
        self._message_ended = False
        super().data_received(data)
        if not self._awaiting_head or self.transport.is_closing():
            return
        # httptools buffers an incomplete head whatever its size: count what it holds.
        # (A chunk that also ended the previous message is not counted; a complete
        # head is measured exactly in `on_headers_complete`.)
        self._head_bytes = 0 if self._message_ended else self._head_bytes + len(data)
        if self._head_bytes > self.limits.max_header_bytes:
            _tally.note("heads over WARMRUN_MAX_HEADER_BYTES")
            self._answer_and_close(self._head_too_large())

    # Parser callbacks

    def on_message_begin(self) -> None:
        self._head_begun = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._reading_body = True
        self._body_progress = self.loop.time()
        self._arm(self.limits.body_timeout, self._body_timed_out)
        head_bytes = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if head_bytes <= self.limits.max_header_bytes:
            super().on_headers_complete()
            self._restart_body_clock_on_reads(self.cycle)
            return
        _tally.note("heads over WARMRUN_MAX_HEADER_BYTES")
        app, self.app = self.app, _answer(self._head_too_large())
        try:
            super().on_headers_complete()  # the request is answered by the refusal
        finally:
            self.app = app

    def _restart_body_clock_on_reads(self, cycle: RequestResponseCycle) -> None:
        """The client's clock restarts whenever the app asks for more body: until then
        the client may rightly be waiting (for a `100 Continue`, or for reading to resume
        after the app fell behind), and a check between two timer ticks would miss that."""
        receive = cycle.receive

        async def receive_counting_from_now() -> ASGIReceiveEvent:
            if cycle is self.cycle and self._reading_body:
                self._body_progress = self.loop.time()
            return await receive()

        cycle.receive = receive_counting_from_now  # type: ignore[method-assign]

    def on_body(self, body: bytes) -> None:
        self._body_progress = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        self._reading_body = False
        self._awaiting_head = True
        self._message_ended = True
        self._head_bytes = 0
        self._head_begun = False
        super().on_message_complete()

    def _head_too_large(self) -> Problem:
        return Problem(
            431,
            "headers_too_large",
            f"the request line and headers exceed {self.limits.max_header_bytes} bytes "
            "(WARMRUN_MAX_HEADER_BYTES)",
        )

    # Deadlines

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A slow pipelined head behind a response still streaming: let that response
            # finish, then close, as a graceful shutdown does. Reading goes on (the head
            # size limit still holds), so that closing finds nothing unread and does
            # not reset the connection under the answer.
            self.cycle.keep_alive = False
            return
        _tally.note("slow request heads")
        if not self._head_begun:
            self.transport.close()  # nothing was asked: nothing to answer
            return
        self._answer_and_close(
            Problem(
                408,
                "request_timeout",
                f"the request line and headers took longer than {self.limits.header_timeout:g} s "
                "(WARMRUN_HEADER_TIMEOUT)",
            )
        )

    def _body_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or not self._reading_body:
            return
        now = self.loop.time()
        if self.flow.read_paused or self.cycle.waiting_for_100_continue:
            self._body_progress = now  # the app is not reading yet: not the client's fault
        if now - self._body_progress < self.limits.body_timeout:
            self._arm(self.limits.body_timeout - (now - self._body_progress), self._body_timed_out)
            return
        _tally.note("stalled request bodies")
        if self.cycle.response_started:
            # Answered already (e.g. without reading the body) or answering: the client
            # has its answer or is cut off mid-answer; either way it stopped sending.
            self.transport.close()
            return
        self._answer_and_close(
            Problem(
                408,
                "request_timeout",
                f"the request body stalled for more than {self.limits.body_timeout:g} s "
                "(WARMRUN_BODY_TIMEOUT)",
            )
        )

    def _answer_and_close(self, problem: Problem) -> None:
        """Write a problem answer straight to the socket and close it. An app still
        waiting on the body sees the client as gone, so it sends nothing more."""
        self._disarm()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        response = problem_response(problem)
        headers = [*self.server_state.default_headers, *response.raw_headers]
        head = [STATUS_LINE[problem.status]]
        head += [name + b": " + value + b"\r\n" for name, value in headers]
        self.transport.write(b"".join([*head, b"connection: close\r\n\r\n", response.body]))
        self.transport.close()


def _answer(problem: Problem) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """An ASGI app answering every request with `problem`, then closing the connection."""
    problem.headers["Connection"] = "close"
    response = problem_response(problem)

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        await response(scope, receive, send)

    return answer


def limited_protocol(limits: ConnectionLimits) -> type[LimitedHttpProtocol]:
    """The protocol class to give uvicorn (`Config(http=...)`), bound to `limits`."""
    return type("LimitedHttpProtocol", (LimitedHttpProtocol,), {"limits": limits})
