"""Bearer-token auth (`WARMRUN_AUTH_TOKEN`): every route but `/health` when it is set."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from warmrun.api.dependencies import DeploymentDep
from warmrun.api.problems import Problem

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
