"""The asyncio client: `AsyncDeploymentClient` and its `AsyncRunHandle`s.

It is `DeploymentClient`'s twin, call for call; what the two decide is shared in
`_protocol`, so they differ only in how they wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from warmrun.client._protocol import (
    DEFAULT_TIMEOUT,
    LONG_POLL,
    Call,
    Deadline,
    Endpoint,
    EventDecoder,
    accepted_run,
    apply_event,
    check,
    events_call,
    invoke_call,
    is_retryable,
    outputs_or_raise,
    parse_run,
    retry_after,
    run_id_of,
    run_path,
    runs_call,
    runs_page,
    stream_is_missing,
    sync_outputs,
)
from warmrun.resource import AcceptedRun, Run
from warmrun.run import RunStatus


class AsyncDeploymentClient:
    """A warmrun deployment, reached over HTTP from asyncio code. Close it (`aclose()`,
    or use `async with`) when done.

    The twin of `DeploymentClient`, call for call. `token` is sent as
    `Authorization: Bearer <token>`. `429` and `503` answers are retried after the
    server's `Retry-After`, at most `max_retries` times and `max_retry_wait` seconds in
    all per call; then they raise (`Backpressure`, ...). `long_poll` bounds each HTTP
    request of a sync `invoke`; a longer run is then followed by its id. `http_client`
    replaces the `httpx.AsyncClient` this client would make (proxies, certificates,
    event hooks); it is not closed by `aclose()`.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        max_retries: int = 5,
        max_retry_wait: float = 120.0,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        long_poll: float = LONG_POLL,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._endpoint = Endpoint(
            url,
            token,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
            long_poll=long_poll,
        )
        self._http = http_client or httpx.AsyncClient(timeout=timeout)
        self._owns_http = http_client is None

    @property
    def url(self) -> str:
        return self._endpoint.url

    def __repr__(self) -> str:
        return f"AsyncDeploymentClient({self.url!r})"

    async def __aenter__(self) -> AsyncDeploymentClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def invoke(
        self,
        parameters: Mapping[str, Any] | None = None,
        *,
        run_name: str | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Run the pipeline and return its outputs once the run has ended.

        `timeout` is the run's budget on the server (it then ends `timed_out`), not a
        limit on this call. A run that ends badly raises `RunFailed`, `RunCancelled` or
        `RunTimedOut`, each carrying the run.
        """
        call = invoke_call(
            parameters,
            run_name=run_name,
            timeout=timeout,
            idempotency_key=idempotency_key,
            async_=False,
            long_poll=self._endpoint.long_poll,
        )
        response = check(await self._send(call))
        outputs = sync_outputs(response)
        if outputs is not None:
            return outputs
        return await self.run(run_id_of(response)).result()

    async def submit(
        self,
        parameters: Mapping[str, Any] | None = None,
        *,
        run_name: str | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncRunHandle:
        """Start a run and return at once; the run lives on the server, not in this call.

        With an `idempotency_key`, calling again with the same key and parameters (after
        an error, from another process) names the same run instead of starting one.
        """
        call = invoke_call(
            parameters,
            run_name=run_name,
            timeout=timeout,
            idempotency_key=idempotency_key,
            async_=True,
        )
        response = check(await self._send(call))
        return AsyncRunHandle(self, run_id_of(response), accepted=accepted_run(response))

    def run(self, run_id: str) -> AsyncRunHandle:
        """A handle on an existing run (no request is made until it is used)."""
        return AsyncRunHandle(self, run_id)

    async def runs(
        self, status: RunStatus | None = None, *, page_size: int | None = None
    ) -> AsyncIterator[Run]:
        """This deployment's runs, newest first, fetched a page at a time as iterated."""
        page_token: str | None = None
        while True:
            runs, page_token = runs_page(await self._send(runs_call(status, page_size, page_token)))
            for run in runs:
                yield run
            if page_token is None:
                return

    async def _send(self, call: Call) -> httpx.Response:
        attempt, waited = 0, 0.0
        while True:
            try:
                response = await self._http.request(
                    call.method,
                    self._endpoint.url_for(call.path),
                    json=call.json,
                    params=call.params,
                    headers=self._endpoint.headers_for(call),
                    timeout=call.timeout or httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as err:
                raise self._endpoint.unreachable(call, err) from err
            if not is_retryable(call, response):
                return response
            pause = self._endpoint.retry.pause(attempt, waited, retry_after(response))
            if pause is None:
                return response
            await asyncio.sleep(pause)
            attempt, waited = attempt + 1, waited + pause


class AsyncRunHandle:
    """One run of a deployment, by id, for asyncio code. Every method asks the server
    afresh."""

    def __init__(
        self, client: AsyncDeploymentClient, run_id: str, *, accepted: AcceptedRun | None = None
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.accepted = accepted
        """The `202 Accepted` answer, for a handle that `submit` returned."""

    def __repr__(self) -> str:
        return f"AsyncRunHandle({self.run_id!r}, client={self.client.url!r})"

    async def status(self) -> Run:
        """The run now (`GET /runs/{id}`); raises `NotFound` for an unknown id."""
        return (await self._fetch())[0]

    async def cancel(self) -> Run:
        """Ask for cancellation and return the run. The run turns `cancelled` only once
        the pipeline has stopped: `wait()` for that. A run that had already ended is
        returned as it ended (the server's `409`)."""
        response = await self.client._send(Call("DELETE", run_path(self.run_id)))
        return parse_run(check(response, also=(409,)))

    async def watch(
        self, timeout: float | None = None, poll: float | None = None
    ) -> AsyncIterator[Run]:
        """Yield the run each time it changes (status, progress), ending with its final
        state. Uses the server's event stream when it has one, else polls every `poll`
        seconds (default: the server's `Retry-After` hint). After `timeout` seconds
        raises `WaitTimedOut`; the run goes on."""
        endpoint = self.client._endpoint
        deadline = Deadline(self.run_id, timeout)
        run, hint = await self._fetch()
        yield run
        while not run.is_terminal:
            if endpoint.events_supported is not False:
                async for update in self._events(run, deadline):
                    run = update
                    yield run
                if endpoint.events_supported:
                    latest, hint = await self._fetch()
                    if latest != run:
                        run = latest
                        yield run
                    if run.is_terminal:
                        return
            await asyncio.sleep(deadline.poll_interval(poll, hint))
            latest, hint = await self._fetch()
            if latest != run:
                run = latest
                yield run

    async def wait(self, timeout: float | None = None, poll: float | None = None) -> Run:
        """The run once it has ended, however it ended (see `result()` to raise)."""
        async for run in self.watch(timeout, poll):
            if run.is_terminal:
                return run
        raise AssertionError("watch() ended before the run did")

    async def result(
        self, timeout: float | None = None, poll: float | None = None
    ) -> dict[str, Any]:
        """The outputs once the run has ended; `RunFailed`, `RunCancelled` or
        `RunTimedOut` if it ended badly."""
        return outputs_or_raise(await self.wait(timeout, poll))

    async def _fetch(self) -> tuple[Run, float | None]:
        response = check(await self.client._send(Call("GET", run_path(self.run_id))))
        return parse_run(response), retry_after(response)

    async def _events(self, run: Run, deadline: Deadline) -> AsyncIterator[Run]:
        """Changes from `GET /runs/{id}/events` until the stream ends, falls silent or
        tells of the run's end; finding no such route turns this client to polling."""
        endpoint = self.client._endpoint
        call = events_call(self.run_id, deadline)
        try:
            async with self.client._http.stream(
                call.method,
                endpoint.url_for(call.path),
                headers=endpoint.headers_for(call),
                timeout=call.timeout,
            ) as response:
                if stream_is_missing(response):
                    endpoint.events_supported = False
                    return
                if not response.is_success:
                    return
                endpoint.events_supported = True
                decoder = EventDecoder()
                async for line in response.aiter_lines():
                    event = decoder.feed(line)
                    if event is None:
                        continue
                    update = apply_event(run, event)
                    if update.is_terminal or deadline.expired:
                        return
                    if update != run:
                        run = update
                        yield run
        except httpx.ReadTimeout:
            return
        except httpx.TransportError as err:
            if endpoint.events_supported:
                return
            raise endpoint.unreachable(call, err) from err
