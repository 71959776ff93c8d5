"""`GET /metrics` and the bookkeeping of invocation answers."""

from __future__ import annotations

import httpx
from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from warmrun.api.auth import Authenticated
from warmrun.api.dependencies import DeploymentDep
from warmrun.metrics import Metrics

router = APIRouter(tags=["service"], dependencies=[Authenticated])

INVOCATION_ROUTES = {"/invoke", "/submit"}
SDK_SCRAPE_TIMEOUT = 2.0


@router.get("/metrics", response_class=Response)
async def metrics(deployment: DeploymentDep) -> Response:
    """Prometheus text: `warmrun_*` series, then the Temporal SDK's own."""
    body = deployment.metrics.render()
    if deployment.sdk_metrics_url:
        try:
            async with httpx.AsyncClient(timeout=SDK_SCRAPE_TIMEOUT) as http:
                sdk = await http.get(deployment.sdk_metrics_url)
            body += b"\n" + sdk.content
        except httpx.HTTPError:
            pass  # the SDK's exporter is best effort; warmrun's series still answer
    return Response(body, media_type=CONTENT_TYPE_LATEST)


class InvocationMetricsMiddleware:
    """Counts every answer of the invocation routes, refusals before parsing included.

    The route says which mode it answered in (`scope["state"]["invoke_mode"]`); an
    answer given before the route ran (413, 422, 401) counts as mode `rejected`.
    """

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
