"""Prometheus metrics of one deployment process (`GET /metrics`).

warmrun's own series live in a registry per app (several apps can share a process in
tests); the Temporal SDK's series join the same registry (`warmrun.sdk_metrics`).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.invocations = Counter(
            "warmrun_invocations",
            "Answers to POST /invoke and /submit, by mode (sync, async, wait) and status code.",
            ["mode", "code"],
            registry=self.registry,
        )
        self.runs_finished = Counter(
            "warmrun_runs_finished",
            "Pipeline executions that ended in this process, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.run_duration = Histogram(
            "warmrun_run_duration_seconds",
            "Pipeline execution time in this process, by outcome.",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.runs_executing = Gauge(
            "warmrun_runs_executing",
            "Pipeline executions running in this process now.",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "warmrun_queue_depth",
            "Queued + running runs of the deployment (all replicas), as last counted.",
            registry=self.registry,
        )
        self.event_streams = Gauge(
            "warmrun_event_streams",
            "Open GET /runs/{id}/events streams in this process.",
            registry=self.registry,
        )
        self.followed_runs = Gauge(
            "warmrun_followed_runs",
            "Runs this process polls for its event streams (one poller per run).",
            registry=self.registry,
        )

        self.webhook_deliveries = Counter(
            "warmrun_webhook_deliveries",
            "Webhook delivery attempts made by this process, by outcome.",
            ["outcome"],
            registry=self.registry,
        )

    def track_queue_depth(self, estimate: Callable[[], int]) -> None:
        self.queue_depth.set_function(estimate)

    def track_event_streams(self, streams: Callable[[], int], runs: Callable[[], int]) -> None:
        self.event_streams.set_function(streams)
        self.followed_runs.set_function(runs)

    def render(self) -> bytes:
        return generate_latest(self.registry)
