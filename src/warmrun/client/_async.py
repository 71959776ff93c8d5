"""The asyncio client: `AsyncDeployment` and its `AsyncRunHandle`s.

It mirrors `Deployment` call for call; what the two decide is shared in `_protocol`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from warmrun.client._models import AcceptedRun, Run, RunStatus
from warmrun.client._protocol import (
    DEFAULT_TIMEOUT,
    LONG_POLL,
    Call,
    Deadline,
    EventDecoder,
    Target,
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


class AsyncDeployment:
    """The `async` twin of `Deployment`, on `httpx.AsyncClient`; same arguments."""

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
        self._target = Target(
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
        return self._target.url

    def __repr__(self) -> str:
        return f"AsyncDeployment({self.url!r})"

    async def __aenter__(self) -> AsyncDeployment:
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
        """See `Deployment.invoke`."""
        call = invoke_call(
            parameters,
            run_name=run_name,
            timeout=timeout,
            idempotency_key=idempotency_key,
            async_=False,
            long_poll=self._target.long_poll,
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
        """See `Deployment.submit`."""
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
        """See `Deployment.runs`."""
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
                    self._target.url_for(call.path),
                    json=call.json,
                    params=call.params,
                    headers=self._target.headers_for(call),
                    timeout=call.timeout or httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as err:
                raise self._target.unreachable(call, err) from err
            if not is_retryable(call, response):
                return response
            pause = self._target.retry.pause(attempt, waited, retry_after(response))
            if pause is None:
                return response
            await asyncio.sleep(pause)
            attempt, waited = attempt + 1, waited + pause


class AsyncRunHandle:
    """The `async` twin of `RunHandle`."""

    def __init__(
        self, deployment: AsyncDeployment, run_id: str, *, accepted: AcceptedRun | None = None
    ) -> None:
        self.deployment = deployment
        self.run_id = run_id
        self.accepted = accepted

    def __repr__(self) -> str:
        return f"AsyncRunHandle({self.run_id!r}, deployment={self.deployment.url!r})"

    async def status(self) -> Run:
        """See `RunHandle.status`."""
        return (await self._fetch())[0]

    async def cancel(self) -> Run:
        """See `RunHandle.cancel`."""
        response = await self.deployment._send(Call("DELETE", run_path(self.run_id)))
        return parse_run(check(response, also=(409,)))

    async def watch(
        self, timeout: float | None = None, poll: float | None = None
    ) -> AsyncIterator[Run]:
        """See `RunHandle.watch`."""
        target = self.deployment._target
        deadline = Deadline(self.run_id, timeout)
        run, hint = await self._fetch()
        yield run
        while not run.is_terminal:
            if target.events_supported is not False:
                async for update in self._events(run, deadline):
                    run = update
                    yield run
                if target.events_supported:
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
        """See `RunHandle.wait`."""
        async for run in self.watch(timeout, poll):
            if run.is_terminal:
                return run
        raise AssertionError("watch() ended before the run did")

    async def result(
        self, timeout: float | None = None, poll: float | None = None
    ) -> dict[str, Any]:
        """See `RunHandle.result`."""
        return outputs_or_raise(await self.wait(timeout, poll))

    async def _fetch(self) -> tuple[Run, float | None]:
        response = check(await self.deployment._send(Call("GET", run_path(self.run_id))))
        return parse_run(response), retry_after(response)

    async def _events(self, run: Run, deadline: Deadline) -> AsyncIterator[Run]:
        """See `RunHandle._events`."""
        target = self.deployment._target
        call = events_call(self.run_id, deadline)
        try:
            async with self.deployment._http.stream(
                call.method,
                target.url_for(call.path),
                headers=target.headers_for(call),
                timeout=call.timeout,
            ) as response:
                if stream_is_missing(response):
                    target.events_supported = False
                    return
                if not response.is_success:
                    return
                target.events_supported = True
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
            if target.events_supported:
                return
            raise target.unreachable(call, err) from err
