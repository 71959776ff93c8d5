"""`RunContext`: what a pipeline sees of its run.

A pipeline may run in a worker thread (sync code) while its activity heartbeats from
the event loop, so the context is thread-safe: the pipeline writes progress under a
lock, the activity reads a snapshot and sends it to Temporal as heartbeat details,
together with the checkpoints of completed steps. When a run's worker is lost, the
retry (on any replica) receives those checkpoints and skips the steps they cover.
"""

from __future__ import annotations

import inspect
import logging
import threading
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

import pydantic_core
from pydantic import TypeAdapter

from warmrun.run import Progress, StepCheckpoint, ZenMLRunLink

MAX_CHECKPOINT_BYTES = 256 * 1024
"""Step results kept for resuming, in all; they travel in every heartbeat."""

logger = logging.getLogger(__name__)


class CancellationRequested(Exception):
    """Raised in a pipeline by `RunContext.check_cancelled()` once its run was asked to
    stop: by `DELETE /runs/{id}`, a Temporal cancel, or the run's timeout.

    Let it propagate: the run is reported `cancelled` (or `timed_out`) only after
    the pipeline has returned or raised. (A client sees such a run end as
    `warmrun.client.RunCancelled` or `RunTimedOut`.)
    """


class RetryableError(Exception):
    """Raise it (or an exception `from` it) to have the run retried instead of failed.

    Pipeline exceptions fail a run at once; this one asks Temporal for another
    attempt (with backoff, up to `WARMRUN_MAX_ATTEMPTS`), which resumes after the
    last checkpointed step.
    """


class _RunLogger(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = {**(self.extra or {}), **kwargs.pop("extra", {})}
        return f"[run {extra['run_id']}] {msg}", {**kwargs, "extra": extra}


class RunContext:
    """The run's identity, progress, checkpoints and cancellation, for pipeline code.

    Declare a parameter annotated `RunContext` to receive it; it is not part of the
    pipeline's HTTP parameters.
    """

    def __init__(
        self,
        run_id: str,
        run_name: str | None = None,
        state: Any = None,
        *,
        pipeline_name: str = "pipeline",
        attempt: int = 1,
        resume_from: list[StepCheckpoint] | None = None,
        on_change: Callable[[], None] | None = None,
        deadline: datetime | None = None,
        on_zenml_run: Callable[[ZenMLRunLink], None] | None = None,
    ) -> None:
        self._run_id = run_id
        self._deadline = deadline
        self._on_zenml_run = on_zenml_run or (lambda link: None)
        self._run_name = run_name
        self._state = state
        self._attempt = attempt
        self._on_change = on_change or (lambda: None)
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._worker_shutdown = False
        self._progress = Progress()
        self._resume_from = list(resume_from or [])
        self._completed: list[StepCheckpoint] = []
        self._checkpoint_bytes = 0
        self._logger = _RunLogger(
            logging.getLogger(f"warmrun.pipeline.{pipeline_name}"), {"run_id": run_id}
        )

    @property
    def run_id(self) -> str:
        """The run's id: its Temporal workflow ID."""
        return self._run_id

    @property
    def run_name(self) -> str | None:
        return self._run_name

    @property
    def attempt(self) -> int:
        """1 for a first execution; more when the run resumed after a lost worker."""
        return self._attempt

    @property
    def deadline(self) -> datetime | None:
        """When the run times out (None: not known here): a stop asked after it is the
        timeout's rather than a cancel."""
        return self._deadline

    @property
    def state(self) -> Any:
        """What the module's `init()` returned: loaded once per process, shared by runs."""
        return self._state

    @property
    def logger(self) -> logging.LoggerAdapter:
        """A logger whose every line names this run."""
        return self._logger

    @property
    def cancelled(self) -> bool:
        """True once the run was asked to stop (cancel or timeout)."""
        return self._cancelled.is_set()

    def check_cancelled(self) -> None:
        """Raise `CancellationRequested` if the run was asked to stop; call it between chunks."""
        if self._cancelled.is_set():
            raise CancellationRequested(f"run {self._run_id} was asked to stop")

    @property
    def steps_total(self) -> int | None:
        with self._lock:
            return self._progress.steps_total

    @steps_total.setter
    def steps_total(self, total: int | None) -> None:
        """Announce how many steps the run has, so progress has a fraction."""
        with self._lock:
            self._progress.steps_total = total
            self._progress.fraction = self._step_fraction()
        self._on_change()

    def step(
        self, name: str, function: Callable[..., Any] | None = None, /, *args: Any, **kwargs: Any
    ) -> Any:
        """A named step of the run, in one of two forms.

        `with ctx.step("load"):` marks progress: the block is the current step until it
        ends. It always runs, on a resumed attempt too.

        `result = ctx.step("train", train, data)` calls `train(data)` as the step and
        checkpoints its JSON-able result. If the run resumes after a lost worker, a
        step that completed before is not called again: its saved result is returned
        (rebuilt as the function's return annotation says, else as plain JSON). For an
        `async def` function, `await` the call.

        Entering any step checks for cancellation first.
        """
        if function is None:
            return self._block(name)
        if inspect.iscoroutinefunction(function):
            return self._async_call(name, function, args, kwargs)
        return self._call(name, function, args, kwargs)

    def progress(self, fraction: float | None = None, message: str | None = None) -> None:
        """Report progress within the run (fraction in [0, 1]) and/or a message."""
        if fraction is not None and not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must be within [0, 1], got {fraction}")
        self.check_cancelled()
        with self._lock:
            if fraction is not None:
                self._progress.fraction = fraction
            if message is not None:
                self._progress.message = message
        self._on_change()

    def snapshot(self) -> Progress:
        """A consistent copy of the run's progress."""
        with self._lock:
            return replace(self._progress)

    @property
    def checkpoint_bytes(self) -> int:
        """How large the saved step results are as JSON (at most `MAX_CHECKPOINT_BYTES`)."""
        with self._lock:
            return self._checkpoint_bytes

    def checkpoints(self) -> list[StepCheckpoint]:
        """The steps completed so far, in order, for the next heartbeat."""
        with self._lock:
            return list(self._completed)

    def _request_cancel(self, *, worker_shutdown: bool = False) -> None:
        """Ask the pipeline to stop: the run was cancelled or timed out, or (with
        `worker_shutdown`) this process's worker is shutting down and the run goes on
        in another attempt, elsewhere."""
        self._worker_shutdown = worker_shutdown
        self._cancelled.set()

    @property
    def _stopping_for_shutdown(self) -> bool:
        """The stop asked is this worker's shutdown, not the run's end."""
        return self._worker_shutdown

    def _link_zenml_run(self, link: ZenMLRunLink) -> None:
        """Record which ZenML pipeline run this run is (`warmrun.zenml` calls it)."""
        self._on_zenml_run(link)

    @contextmanager
    def _block(self, name: str) -> Iterator[None]:
        self._begin(name, resumable=False)
        yield
        self._end(StepCheckpoint(name=name))

    def _call(self, name: str, function: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        saved = self._begin(name, resumable=True)
        if saved is not None:
            return self._restored(saved, function)
        result = function(*args, **kwargs)
        self._end(self._checkpoint(name, result))
        return result

    async def _async_call(
        self, name: str, function: Callable[..., Any], args: Any, kwargs: Any
    ) -> Any:
        saved = self._begin(name, resumable=True)
        if saved is not None:
            return self._restored(saved, function)
        result = await function(*args, **kwargs)
        self._end(self._checkpoint(name, result))
        return result

    def _begin(self, name: str, *, resumable: bool) -> StepCheckpoint | None:
        """Start step `name`; return its checkpoint if a previous attempt saved it (only
        for the function form: a `with` block always runs, but keeps its position)."""
        self.check_cancelled()
        position = len(self._completed)
        saved = None
        if position < len(self._resume_from):
            candidate = self._resume_from[position]
            if candidate.name != name:
                # The pipeline took another path than last time: stop resuming.
                del self._resume_from[position:]
            elif resumable and candidate.saved:
                saved = candidate
        with self._lock:
            self._progress.step = name
            self._progress.message = None
        self._on_change()
        if saved is not None:
            self._logger.info("step %r completed in an earlier attempt: skipped", name)
            self._end(saved)
        return saved

    def _end(self, checkpoint: StepCheckpoint) -> None:
        with self._lock:
            self._completed.append(checkpoint)
            self._progress.steps_completed += 1
            self._progress.step = None
            self._progress.fraction = self._step_fraction()
        self._on_change()

    def _checkpoint(self, name: str, result: Any) -> StepCheckpoint:
        try:
            jsonable = pydantic_core.to_jsonable_python(result)
            size = len(pydantic_core.to_json(jsonable))
        except (pydantic_core.PydanticSerializationError, ValueError):
            self._logger.warning("step %r: result is not JSON-able, not checkpointed", name)
            return StepCheckpoint(name=name, saved=False)
        if self._checkpoint_bytes + size > MAX_CHECKPOINT_BYTES:
            self._logger.warning(
                "step %r: result (%d bytes) over the checkpoint budget, not checkpointed",
                name,
                size,
            )
            return StepCheckpoint(name=name, saved=False)
        self._checkpoint_bytes += size
        return StepCheckpoint(name=name, result=jsonable)

    def _restored(self, saved: StepCheckpoint, function: Callable[..., Any]) -> Any:
        try:
            annotation = typing.get_type_hints(function).get("return")
        except Exception:  # an unresolvable hint: the saved JSON is still the result
            self._logger.warning(
                "step %r: cannot read the return annotation of %r; its saved result is "
                "returned as plain JSON",
                saved.name,
                function,
                exc_info=True,
            )
            annotation = None
        if annotation is None or annotation is Any:
            return saved.result
        return TypeAdapter(annotation).validate_python(saved.result)

    def _step_fraction(self) -> float | None:
        total = self._progress.steps_total
        if not total:
            return self._progress.fraction
        return min(self._progress.steps_completed / total, 1.0)
