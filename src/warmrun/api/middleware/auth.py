"""Bearer-token auth before anything reads the request body.

A pure ASGI middleware, outside the body limit and FastAPI's parsing: without a valid
token a request is answered 401 from its headers alone, so a caller who may not use
the API learns nothing from how its body is judged (400, 413, 422) and costs the
server no body read. `/health` stays public for load balancers; everything else, the
docs and the spec included, needs a token when `WARMRUN_AUTH_TOKEN` is set.
"""

from __future__ import annotations

import secrets

from starlette.types import ASGIApp, Receive, Scope, Send

from warmrun.api.problems import Problem, problem_response

PUBLIC_PATHS = frozenset({"/health"})
REALM = 'Bearer realm="warmrun"'


def token_problem(authorization: str | None, tokens: list[str]) -> Problem | None:
    """Why a request with this `Authorization` header may not pass, or None."""
    if not tokens:
        return None
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return Problem(
            401,
            "unauthorized",
            "this deployment requires `Authorization: Bearer <token>`",
            headers={"WWW-Authenticate": REALM},
        )
    if not _matches(presented.strip(), tokens):
        return Problem(
            401,
            "invalid_token",
            "the bearer token is not valid for this deployment",
            headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'},
        )
    return None


def _matches(presented: str, tokens: list[str]) -> bool:
    """Compare against every token in constant time, without stopping at a match."""
    matched = False
    for token in tokens:
        matched |= secrets.compare_digest(presented.encode(), token.encode())
    return matched


class AuthMiddleware:
    def __init__(self, app: ASGIApp, tokens: list[str]) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.tokens or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        problem = token_problem(authorization, self.tokens)
        if problem is None:
            await self.app(scope, receive, send)
            return
        await problem_response(problem, path=scope["path"])(scope, receive, send)
