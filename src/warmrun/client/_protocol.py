"""The client's HTTP protocol without the I/O: what to send, what an answer means.

The sync and async clients differ only in how they wait; everything they decide
(request bodies, errors, when and how long to back off, server-sent events) lives
here once, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from warmrun import __version__
from warmrun.client._errors import (
    APIError,
    Backpressure,
    DeploymentUnreachable,
    NotFound,
    RunCancelled,
    RunEndedBadly,
    RunFailed,
    RunTimedOut,
    Unauthorized,
    Unavailable,
    Unsupported,
    WaitTimedOut,
)
from warmrun.resource import AcceptedRun, Run
from warmrun.run import Progress, RunStatus

USER_AGENT = f"warmrun-client/{__version__}"
CONNECT_TIMEOUT = 10.0
IO_TIMEOUT = 30.0
DEFAULT_TIMEOUT = httpx.Timeout(IO_TIMEOUT, connect=CONNECT_TIMEOUT)
DEFAULT_POLL = 2.0
"""Seconds between two status reads when the server gives no `Retry-After` hint (a
warmrun server always does while a run goes on)."""
LONG_POLL = 60.0
"""Longest single request of a sync `invoke`: proxies cut connections held much longer,
so past it the client follows the run by its id instead."""
STREAM_READ_TIMEOUT = 60.0
"""Silence on an event stream after which the client reconnects to check the run."""
MAX_BACKOFF = 30.0


def reading_for(seconds: float) -> httpx.Timeout:
    """The default timeouts, but waiting `seconds` for the answer to come."""
    return httpx.Timeout(IO_TIMEOUT, connect=CONNECT_TIMEOUT, read=seconds)


@dataclass(frozen=True)
class RetryBudget:
    """How long one call keeps retrying `429`/`503` answers before raising them.

    The server's `Retry-After` sets each pause; without one the pause doubles from
    `backoff`. A pause that would take the call past `max_wait` in total is not taken:
    the error is raised at once, still carrying the server's `retry_after`.
    """

    max_retries: int = 5
    max_wait: float = 120.0
    backoff: float = 0.5

    def pause(self, attempt: int, waited: float, hint: float | None) -> float | None:
        """Seconds to wait before retry number `attempt + 1`, or None to give up."""
        if attempt >= self.max_retries:
            return None
        if hint is None:
            hint = min(self.backoff * 2**attempt, MAX_BACKOFF) * random.uniform(0.8, 1.2)
        if waited + hint > self.max_wait:
            return None
        return hint


@dataclass
class Call:
    """One logical request; `retry_safe` says resending it cannot start a second run."""

    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: httpx.Timeout | None = None
    retry_safe: bool = True


def run_path(run_id: str, suffix: str = "") -> str:
    return f"/runs/{quote(run_id, safe='')}{suffix}"


def invoke_call(
    parameters: Mapping[str, Any] | None,
    *,
    run_name: str | None,
    timeout: float | None,
    idempotency_key: str | None,
    async_: bool,
    long_poll: float | None = None,
) -> Call:
    """`POST /invoke`. Without a key, only a `429` (refused before any run started) is
    safe to resend; with one, the server maps every resend onto the first run."""
    body: dict[str, Any] = {"parameters": dict(parameters or {})}
    if run_name is not None:
        body["run_name"] = run_name
    if timeout is not None:
        body["timeout"] = timeout
    if async_:
        body["async"] = True
    headers: dict[str, str] = {}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    request_timeout = None
    if long_poll is not None:
        headers["Prefer"] = f"wait={long_poll:g}"
        request_timeout = reading_for(long_poll + IO_TIMEOUT)
    return Call(
        "POST",
        "/invoke",
        json=body,
        headers=headers,
        timeout=request_timeout,
        retry_safe=idempotency_key is not None,
    )


def retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds: delay-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


NOTHING_STARTED_CODES = frozenset({"too_many_connections", "shutting_down"})
"""503 answers given before any run could start (refused connection, draining replica)."""


def is_retryable(call: Call, response: httpx.Response) -> bool:
    """429 means the server refused before starting anything; a 503 may have come after
    a run was started, so it is resent only when that cannot start a second one (or
    the answer says nothing was started)."""
    if response.status_code == 429:
        return True
    if response.status_code != 503:
        return False
    return call.retry_safe or _json_object(response).get("code") in NOTHING_STARTED_CODES


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def api_error(response: httpx.Response) -> APIError:
    """The typed error for an error answer, saying what to do about it."""
    problem = _json_object(response)
    code = problem.get("code") if isinstance(problem.get("code"), str) else None
    detail = problem.get("detail") if isinstance(problem.get("detail"), str) else None
    status = response.status_code
    request = response.request
    what = f"{request.method} {request.url.path} answered {status}"
    message = f"{what} ({code}): {detail}" if code else f"{what}: {detail or response.text[:200]}"
    message += "".join(f"\n  {field}" for field in _field_errors(problem))
    hint = retry_after(response)
    later = f"retry after {hint:g} s" if hint is not None else ""
    kinds: dict[int, tuple[type[APIError], str]] = {
        401: (
            Unauthorized,
            "pass its token: DeploymentClient(url, token=...), or --token / WARMRUN_TOKEN",
        ),
        404: (NotFound, ""),
        429: (Backpressure, later),
        503: (Unavailable, later),
    }
    kind, advice = kinds.get(status, (APIError, ""))
    return kind(
        f"{message} ({advice})" if advice else message,
        status_code=status,
        code=code,
        detail=detail,
        problem=problem,
        retry_after=hint,
        response=response,
    )


def _field_errors(problem: dict[str, Any]) -> list[str]:
    """`loc: msg` of each bad field a validation problem lists."""
    errors = problem.get("errors")
    if not isinstance(errors, list):
        return []
    return [
        f"{'.'.join(str(part) for part in error.get('loc', []))}: {error.get('msg', '')}"
        for error in errors
        if isinstance(error, dict)
    ]


def check(response: httpx.Response, *, also: tuple[int, ...] = ()) -> httpx.Response:
    """Raise the typed error unless the answer is a success (or one of `also`)."""
    if response.is_success or response.status_code in also:
        return response
    raise api_error(response)


def unsupported(response: httpx.Response, feature: str) -> Unsupported:
    request = response.request
    return Unsupported(
        f"{request.method} {request.url.path} answered {response.status_code}: the server "
        f"at {request.url.scheme}://{request.url.netloc.decode()} does not {feature} (a "
        "warmrun deployment older than this client, or the URL is not a deployment's root)",
        status_code=response.status_code,
        problem=_json_object(response),
        response=response,
    )


def runs_call(status: str | None, page_size: int | None, page_token: str | None) -> Call:
    params = {"status": status, "limit": page_size, "page_token": page_token}
    return Call("GET", "/runs", params={k: v for k, v in params.items() if v is not None})


def runs_page(response: httpx.Response) -> tuple[list[Run], str | None]:
    """The runs of one `GET /runs` page and the token of the next (None: the last)."""
    if response.status_code in (404, 405):
        raise unsupported(response, "list runs (GET /runs)")
    page = check(response).json()
    runs = [Run.model_validate(item) for item in page.get("runs", [])]
    return runs, page.get("next_page_token") or None


def parse_run(response: httpx.Response) -> Run:
    return Run.model_validate_json(response.content)


def run_id_of(response: httpx.Response) -> str:
    """The run an `/invoke` answer names: the body's, else the `X-Run-Id` header's."""
    body = _json_object(response)
    metadata = body.get("metadata")
    for candidate in (
        body.get("run_id"),
        metadata.get("run_id") if isinstance(metadata, dict) else None,
        response.headers.get("X-Run-Id"),
    ):
        if isinstance(candidate, str) and candidate:
            return candidate
    raise APIError(
        f"POST /invoke answered {response.status_code} without naming a run",
        status_code=response.status_code,
        response=response,
    )


def sync_outputs(response: httpx.Response) -> dict[str, Any] | None:
    """The outputs of a sync `/invoke` answer whose run succeeded. None when the run
    outlasted the long poll (202) or ended badly: its run resource tells the rest."""
    if response.status_code != 200:
        return None
    body = _json_object(response)
    if body.get("success") is not True:
        return None
    outputs = body.get("outputs")
    return dict(outputs) if isinstance(outputs, dict) else {}


def accepted_run(response: httpx.Response) -> AcceptedRun | None:
    """The `202` body of an async start (a `200` names a run that had already ended)."""
    if response.status_code != 202:
        return None
    return AcceptedRun.model_validate_json(response.content)


_ENDINGS: dict[RunStatus, type[RunEndedBadly]] = {
    RunStatus.FAILED: RunFailed,
    RunStatus.CANCELLED: RunCancelled,
    RunStatus.TIMED_OUT: RunTimedOut,
}


def outputs_or_raise(run: Run) -> dict[str, Any]:
    """A succeeded run's outputs; the typed error of a run that ended any other way."""
    if run.status == RunStatus.SUCCEEDED:
        return dict(run.outputs or {})
    ending = _ENDINGS.get(run.status)
    if ending is None:
        raise ValueError(f"run {run.run_id} has not ended (status {run.status})")
    raise ending(run)


# --- server-sent events (WHATWG HTML §9.2) ------------------------------------------


@dataclass(frozen=True)
class ServerSentEvent:
    event: str
    data: str
    id: str | None = None


class EventDecoder:
    """Turns the lines of a `text/event-stream` into events, one line at a time."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self.last_event_id: str | None = None
        self.retry: float | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        """The event a blank line completes, if any; other lines only accumulate."""
        if not line:
            event = None
            if self._data:
                event = ServerSentEvent(
                    self._event or "message", "\n".join(self._data), self.last_event_id
                )
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value) / 1000
        return None


def apply_event(run: Run, event: ServerSentEvent) -> Run:
    """The run as an event updates it. Events carry the run resource or a part of it
    (`{"status": ...}`, a progress object); anything unreadable leaves it unchanged."""
    try:
        data = json.loads(event.data)
    except ValueError:
        return run
    if not isinstance(data, dict):
        return run
    if (
        event.event == "progress"
        and "progress" not in data
        and data.keys() <= {item.name for item in fields(Progress)}
    ):
        data = {"progress": data}
    try:
        return Run.model_validate({**run.model_dump(mode="json"), **data})
    except ValidationError:
        return run


def is_event_stream(response: httpx.Response) -> bool:
    return response.headers.get("Content-Type", "").startswith("text/event-stream")


# --- shared by both clients ---------------------------------------------------------


class Endpoint:
    """Where a deployment is and how every request to it is dressed and retried."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        max_retries: int,
        max_retry_wait: float,
        long_poll: float,
    ) -> None:
        if "://" not in url:
            url = f"http://{url}"
        self.url = url.rstrip("/")
        self.headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.retry = RetryBudget(max_retries=max_retries, max_wait=max_retry_wait)
        self.long_poll = long_poll
        self.events_supported: bool | None = None
        """Whether `GET /runs/{id}/events` exists; None until the first wait asks."""

    def url_for(self, path: str) -> str:
        return f"{self.url}{path}"

    def headers_for(self, call: Call) -> dict[str, str]:
        return {**self.headers, **call.headers}

    def unreachable(self, call: Call, err: httpx.TransportError) -> DeploymentUnreachable:
        reason = str(err) or type(err).__name__
        return DeploymentUnreachable(f"{call.method} {self.url_for(call.path)}: {reason}")


class Deadline:
    """The end of a client-side wait; `None` waits as long as the run lasts."""

    def __init__(self, run_id: str, timeout: float | None) -> None:
        self.run_id = run_id
        self.timeout = timeout
        self._end = None if timeout is None else time.monotonic() + timeout

    @property
    def expired(self) -> bool:
        return self._end is not None and time.monotonic() >= self._end

    def bound(self, seconds: float) -> float:
        """`seconds`, cut to what is left of the wait; raises once nothing is left."""
        if self._end is None:
            return seconds
        left = self._end - time.monotonic()
        if left <= 0:
            raise WaitTimedOut(self.run_id, self.timeout or 0.0)
        return min(seconds, left)

    def poll_interval(self, poll: float | None, hint: float | None) -> float:
        return self.bound(poll if poll is not None else hint if hint is not None else DEFAULT_POLL)


def events_call(run_id: str, deadline: Deadline) -> Call:
    """`GET /runs/{id}/events`. A reconnection re-reads the run instead of replaying
    events (`Last-Event-ID`): the run resource is the whole state."""
    return Call(
        "GET",
        run_path(run_id, "/events"),
        headers={"Accept": "text/event-stream"},
        timeout=reading_for(deadline.bound(STREAM_READ_TIMEOUT)),
    )


def stream_is_missing(response: httpx.Response) -> bool:
    """An answer saying the server has no event stream (so: poll instead)."""
    if response.status_code in (404, 405):
        return True
    return response.is_success and not is_event_stream(response)
