"""Counting every answer of the invocation routes, refusals before parsing included."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from warmrun.metrics import Metrics

INVOCATION_ROUTES = {"/invoke", "/submit"}


class InvocationMetricsMiddleware:
    """The route says which mode it answered in (`scope["state"]["invoke_mode"]`); an
    answer given before the route ran (413, 422, 401) counts as mode `rejected`."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in INVOCATION_ROUTES:
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                mode = scope.get("state", {}).get("invoke_mode", "rejected")
                self.metrics.invocations.labels(mode, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)
