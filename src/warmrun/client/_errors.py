"""The client's one exception hierarchy: catch `WarmrunError` to handle them all.

Two families sit under it. `APIError` and its subclasses mean the deployment refused a
request (the answer's problem `code` and `detail` travel with them). `RunEndedBadly`
and its subclasses mean the request worked but the run itself did not succeed; they
carry the run, so its error, progress and timing stay at hand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from warmrun.resource import Run


class WarmrunError(Exception):
    """Base of every error the warmrun client raises."""


class DeploymentUnreachable(WarmrunError):
    """No answer came back (connection refused, DNS, network or read timeout).

    Nothing says whether a POST reached the server: retry a `submit` only with the same
    idempotency key, which makes the retry name the first run instead of starting another.
    """


class WaitTimedOut(WarmrunError, TimeoutError):
    """The client stopped waiting; the run itself goes on (see `run_id`)."""

    def __init__(self, run_id: str, waited: float) -> None:
        super().__init__(
            f"run {run_id} had not ended after {waited:g} s of waiting; it goes on "
            "on the server: wait again, or cancel it"
        )
        self.run_id = run_id
        self.waited = waited


class APIError(WarmrunError):
    """The deployment answered with an error (an RFC 9457 problem, `code` + `detail`)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str | None = None,
        detail: str | None = None,
        problem: dict[str, Any] | None = None,
        retry_after: float | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.detail = detail
        self.problem = problem or {}
        self.retry_after = retry_after
        self.response = response


class Unauthorized(APIError):
    """401: the deployment requires a bearer token and got none or a wrong one."""


class NotFound(APIError):
    """404: no run of this deployment has that id (or the URL is not a deployment)."""


class Backpressure(APIError):
    """429: the deployment's backlog is full; try again after `retry_after` seconds."""


class Unavailable(APIError):
    """503: the deployment cannot reach its Temporal server right now."""


class Unsupported(APIError):
    """The server has no such route: an older warmrun, or not a warmrun deployment."""


class RunEndedBadly(WarmrunError):
    """The run ended, but not successfully; `run` is its final state."""

    def __init__(self, run: Run) -> None:
        super().__init__(self._describe(run))
        self.run = run

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @staticmethod
    def _describe(run: Run) -> str:
        reason = f": {run.error.type}: {run.error.message}" if run.error else ""
        status = run.status.replace("_", " ")
        return f"run {run.run_id} {status}{reason}"


class RunFailed(RunEndedBadly):
    """The pipeline raised, or its run could not go on (e.g. every attempt's worker lost)."""


class RunCancelled(RunEndedBadly):
    """The run was cancelled (`DELETE /runs/{id}`, `cancel()` or a Temporal cancel).

    Not `warmrun.RunCancelled`, which is what pipeline code sees inside the run.
    """


class RunTimedOut(RunEndedBadly):
    """The run used up its time budget (`timeout`) and was stopped."""
