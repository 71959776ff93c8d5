"""What routes share, handed out through `Depends`: the deployment, and its auth."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from warmrun.api.middleware.auth import token_problem
from warmrun.deployment import Deployment


async def get_deployment(request: Request) -> Deployment:
    """`async def`: a plain function dependency would cost a thread-pool hop per request."""
    return request.app.state.deployment


DeploymentDep = Annotated[Deployment, Depends(get_deployment)]

bearer = HTTPBearer(
    auto_error=False,
    description="One of the tokens in `WARMRUN_AUTH_TOKEN` (when auth is on).",
)


async def require_token(
    deployment: DeploymentDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Bearer-token auth (`WARMRUN_AUTH_TOKEN`): every route but `/health` when it is set.

    `AuthMiddleware` already refused a request without a valid token before its body
    was read; this dependency declares the scheme in the OpenAPI spec and checks again,
    so a route is guarded even in an app assembled without the middleware."""
    authorization = f"{credentials.scheme} {credentials.credentials}" if credentials else None
    problem = token_problem(authorization, deployment.settings.auth_tokens())
    if problem is not None:
        raise problem


Authenticated = Depends(require_token)
