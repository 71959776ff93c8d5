"""Errors as `application/problem+json` (RFC 9457), each with a stable `code`.

The one place that turns errors into HTTP: what the run services refuse
(`warmrun.services.errors`), what FastAPI refuses (validation, unknown routes), and
Temporal's RPC errors. Every error a client can cause maps to a 4xx here; Temporal
being unreachable is a 503 with `Retry-After`. Anything else is a bug and still
answers problem+json.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from temporalio.service import RPCError, RPCStatusCode

from warmrun.services.errors import (
    BacklogFull,
    CallbackRefused,
    IdempotencyKeyReused,
    InvalidPageToken,
    ReplicaDraining,
    RunAlreadyEnded,
    RunNotFound,
    RunServiceError,
    TooManyStreams,
    WebhooksDisabled,
)

PROBLEM_JSON = "application/problem+json"
TEMPORAL_RETRY_AFTER = 5

logger = logging.getLogger(__name__)

_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ProblemDetails(BaseModel):
    """RFC 9457 problem details, with warmrun's stable `code`."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="`urn:warmrun:problem:<code>`.")
    title: str
    status: int
    code: str = Field(description="Stable, machine-readable; see the README's error catalogue.")
    detail: str = Field(description="What happened and what to do, for humans.")
    instance: str | None = Field(None, description="The path the problem occurred on.")


_DESCRIPTIONS = {
    400: "Malformed JSON (`malformed_json`).",
    401: "Missing or invalid bearer token (`unauthorized`, `invalid_token`), checked before "
    "the body is read.",
    404: "No run of this deployment has that id (`run_not_found`).",
    409: "The run already ended.",
    413: "The body exceeds `WARMRUN_MAX_BODY_BYTES` (`payload_too_large`).",
    422: "Invalid body, parameters, query or header (`validation_error`), a `page_token` "
    "this listing did not hand out (`invalid_page_token`), an Idempotency-Key "
    "already used for another request (`idempotency_key_reused`), a callback_url that may "
    "not be called (`callback_url_refused`) or webhooks not configured (`webhooks_disabled`).",
    429: "The deployment's backlog is full (`backlog_full`) or this replica has as many "
    "event streams open as it takes (`too_many_streams`); see `Retry-After`.",
    503: "Temporal cannot be reached (`temporal_unavailable`) or this replica is shutting "
    "down (`shutting_down`); see `Retry-After`.",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for problem answers, so `/docs` lists them."""
    return {
        status: {
            "model": ProblemDetails,
            "description": _DESCRIPTIONS[status],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}},
        }
        for status in statuses
    }


class Problem(Exception):
    """An error answer; raise it from a route and the handler renders it."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or code.replace("_", " ").capitalize()
        self.headers = headers or {}
        self.extra = extra


MAX_ECHO = 200
"""Characters of a client's input (an id, a path) that a problem echoes."""


def clip(text: str, limit: int = MAX_ECHO) -> str:
    """What a client sent, echoed at most `limit` characters long: a 60 KB run id gets
    its 404, not a 120 KB answer."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON

    def render(self, content: Any) -> bytes:
        """ASCII escapes: a problem renders whatever the client sent (a lone surrogate
        in an echoed location cannot be UTF-8, but `\\ud800` is JSON)."""
        return json.dumps(
            content, ensure_ascii=True, allow_nan=False, separators=(",", ":")
        ).encode()


def problem_response(
    problem: Problem, request: Request | None = None, *, path: str | None = None
) -> JSONResponse:
    """The problem as an answer; `instance` is the request's path (from `request`, or
    `path` for ASGI middleware that has no Request)."""
    body: dict[str, Any] = {
        "type": f"urn:warmrun:problem:{problem.code}",
        "title": problem.title,
        "status": problem.status,
        "code": problem.code,
        "detail": problem.detail,
    }
    if request is not None:
        path = request.url.path
    if path is not None:
        body["instance"] = clip(path)
    body.update(jsonable_encoder(problem.extra))
    return ProblemResponse(body, status_code=problem.status, headers=problem.headers)


def validation_problem(errors: list[dict[str, Any]]) -> Problem:
    """422 listing each bad field as `{"loc", "msg", "type"}`."""
    fields = [
        {
            "loc": list(error.get("loc", ())),
            "msg": error.get("msg", ""),
            "type": error.get("type", ""),
        }
        for error in errors
    ]
    where = ", ".join(".".join(str(part) for part in field["loc"]) for field in fields)
    return Problem(
        422,
        "validation_error",
        f"the request is not valid: {where}" if where else "the request is not valid",
        title="Request validation failed",
        errors=fields,
    )


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(exc, request)


def service_problem(error: RunServiceError) -> Problem:
    """The HTTP answer to what a run service refused."""
    detail = str(error)
    match error:
        case RunNotFound():
            detail = f"no run {clip(error.run_id)!r} in deployment {error.deployment!r}"
            return Problem(404, "run_not_found", detail)
        case RunAlreadyEnded():
            return Problem(409, "run_already_ended", detail)
        case InvalidPageToken():
            return Problem(
                422,
                "invalid_page_token",
                detail,
                errors=[{"loc": ["query", "page_token"], "msg": detail, "type": "value_error"}],
            )
        case IdempotencyKeyReused():
            return Problem(422, "idempotency_key_reused", detail, run_id=error.run_id)
        case CallbackRefused():
            return Problem(
                422,
                "callback_url_refused",
                detail,
                errors=[{"loc": ["body", "callback_url"], "msg": detail, "type": "value_error"}],
            )
        case WebhooksDisabled():
            return Problem(422, "webhooks_disabled", detail)
        case BacklogFull():
            return Problem(
                429,
                "backlog_full",
                detail,
                title="Too many runs",
                headers={"Retry-After": str(error.retry_after)},
                retry_after=error.retry_after,
            )
        case TooManyStreams():
            return Problem(
                429,
                "too_many_streams",
                detail,
                title="Too many event streams",
                headers={"Retry-After": str(error.retry_after)},
                retry_after=error.retry_after,
            )
        case ReplicaDraining():
            return Problem(
                503, "shutting_down", detail, headers={"Retry-After": str(error.retry_after)}
            )
    raise TypeError(f"no HTTP answer for {type(error).__name__}") from error


async def _on_service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RunServiceError)
    return problem_response(service_problem(exc), request)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(error.get("type") == "json_invalid" for error in errors):
        problem = Problem(
            400, "malformed_json", "the request body is not valid JSON", title="Malformed JSON"
        )
        return problem_response(problem, request)
    return problem_response(validation_problem(errors), request)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODES_BY_STATUS.get(exc.status_code, f"http_{exc.status_code}")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request, headers.get("Allow", "")))
    problem = Problem(exc.status_code, code, str(exc.detail), headers=headers)
    return problem_response(problem, request)


HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def _allowed_methods(request: Request, named: str) -> list[str]:
    """Every method the spec gives this path, with those the framework `named`: it
    names only the first route matching the path, so `/runs/{id}` said `Allow: GET`
    though DELETE exists."""
    methods = {method.strip() for method in named.split(",") if method.strip()}
    for template, operations in request.app.openapi().get("paths", {}).items():
        if _path_regex(template).match(request.url.path):
            methods.update(key.upper() for key in operations if key in HTTP_METHODS)
    return sorted(methods)


@functools.cache
def _path_regex(template: str) -> re.Pattern[str]:
    return compile_path(template)[0]


async def _on_rpc_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RPCError)
    if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
        problem = Problem(
            503,
            "temporal_unavailable",
            f"the Temporal server cannot be reached: {exc.message}",
            headers={"Retry-After": str(TEMPORAL_RETRY_AFTER)},
        )
        return problem_response(problem, request)
    logger.exception("Temporal answered %s", exc.status, exc_info=exc)
    return problem_response(
        Problem(502, "temporal_error", f"Temporal answered: {exc.message}"), request
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        Problem(500, "internal_error", "an unexpected error occurred; see the server log"), request
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RunServiceError, _on_service_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RPCError, _on_rpc_error)
    app.add_exception_handler(Exception, _on_unexpected)
