"""What routes share, handed out through `Depends`: the deployment, and its auth."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from warmrun.api.problems import Problem
from warmrun.deployment import Deployment


async def get_deployment(request: Request) -> Deployment:
    """`async def`: a plain function dependency would cost a thread-pool hop per request."""
    return request.app.state.deployment


DeploymentDep = Annotated[Deployment, Depends(get_deployment)]

bearer = HTTPBearer(
    auto_error=False,
    description="One of the tokens in `WARMRUN_AUTH_TOKEN` (when auth is on).",
)


def _matches(presented: str, tokens: list[str]) -> bool:
    """Compare against every token in constant time, without stopping at a match."""
    matched = False
    for token in tokens:
        matched |= secrets.compare_digest(presented.encode(), token.encode())
    return matched


async def require_token(
    deployment: DeploymentDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Bearer-token auth (`WARMRUN_AUTH_TOKEN`): every route but `/health` when it is set."""
    tokens = deployment.settings.auth_tokens()
    if not tokens:
        return
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(
            401,
            "unauthorized",
            "this deployment requires `Authorization: Bearer <token>`",
            headers={"WWW-Authenticate": 'Bearer realm="warmrun"'},
        )
    if not _matches(credentials.credentials, tokens):
        raise Problem(
            401,
            "invalid_token",
            "the bearer token is not valid for this deployment",
            headers={"WWW-Authenticate": 'Bearer realm="warmrun", error="invalid_token"'},
        )


Authenticated = Depends(require_token)
