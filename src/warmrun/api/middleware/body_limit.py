"""Refuse request bodies over `WARMRUN_MAX_BODY_BYTES` with 413, before parsing them.

A pure ASGI middleware: a declared `Content-Length` over the limit is refused without
reading a byte; a chunked body is counted as it streams and refused once it exceeds.
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from warmrun.api.problems import Problem, problem_response


class BodyTooLarge(HTTPException):
    """Raised while the body streams; FastAPI lets HTTPExceptions through its body
    parsing, so it is answered as the 413 problem it is."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body exceeds {max_bytes} bytes")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            problem = Problem(413, "payload_too_large", BodyTooLarge(self.max_bytes).detail)
            await problem_response(problem, path=scope["path"])(scope, receive, send)
            return

        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
