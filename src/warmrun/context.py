"""`RunContext`: what a pipeline sees of its run.

A pipeline may run in a worker thread (sync code) while its activity heartbeats from
the event loop, so the context is thread-safe: the pipeline writes progress under a
lock, the activity reads a snapshot and sends it to Temporal as heartbeat details.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from warmrun.workflows.contract import Progress


class RunCancelled(Exception):
    """Raised in a pipeline by `RunContext.check_cancelled()` once its run is cancelled.

    A run is cancelled by `DELETE /runs/{id}`, a Temporal cancel, or its timeout.
    Let it propagate: the run is reported `cancelled` (or `timed_out`) only after
    the pipeline has returned or raised.
    """


class _RunLogger(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = {**(self.extra or {}), **kwargs.pop("extra", {})}
        return f"[run {extra['run_id']}] {msg}", {**kwargs, "extra": extra}


class RunContext:
    """The run's identity, progress reporting and cancellation, for pipeline code.

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
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._run_id = run_id
        self._run_name = run_name
        self._state = state
        self._on_change = on_change or (lambda: None)
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._progress = Progress()
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
        """Raise `RunCancelled` if the run was asked to stop; call it between chunks."""
        if self._cancelled.is_set():
            raise RunCancelled(f"run {self._run_id} was cancelled")

    @property
    def steps_total(self) -> int | None:
        with self._lock:
            return self._progress.steps_total

    @steps_total.setter
    def steps_total(self, total: int | None) -> None:
        """Announce how many `step`s the run has, so progress has a fraction."""
        with self._lock:
            self._progress.steps_total = total
            self._progress.fraction = self._step_fraction()
        self._on_change()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Mark a named step: it is the run's current step until the block ends.

        Entering a step checks for cancellation, so a pipeline made of steps stops at
        the next step boundary without further code.
        """
        self.check_cancelled()
        with self._lock:
            self._progress.step = name
            self._progress.message = None
        self._on_change()
        yield
        with self._lock:
            self._progress.steps_completed += 1
            self._progress.step = None
            self._progress.fraction = self._step_fraction()
        self._on_change()

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

    def _request_cancel(self) -> None:
        self._cancelled.set()

    def _step_fraction(self) -> float | None:
        total = self._progress.steps_total
        if not total:
            return self._progress.fraction
        return min(self._progress.steps_completed / total, 1.0)
