"""The Temporal SDK's own metrics, served by the deployment's `/metrics`.

The SDK's Prometheus exporter listens on a port of its own and cannot say which one
it bound: a deployment would have to pick a free port and hope nothing takes it
before the exporter does. Instead the SDK's runtime records into a `MetricBuffer`,
and this collector folds what it recorded into `temporal_*` series of the
deployment's registry: no second port, one scrape, the exporter's names and labels.

Counters are exposed with Prometheus's `_total` suffix, histograms in milliseconds
(as the SDK's exporter does) with one bucket layout for all of them.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_HISTOGRAM,
    BufferedMetric,
    MetricBuffer,
    Runtime,
    TelemetryConfig,
)

BUFFER_SIZE = 10_000
"""Updates the SDK keeps between two drains; beyond, it drops them. A run makes ~55, so
this holds a second of 200 runs/s, ten drains' worth. The SDK's buffer is a ring: a
process comes to hold all of it (~100 bytes an update; 200,000 cost 20 MB of RSS)."""
DRAIN_SECONDS = 0.1
HISTOGRAM_BUCKETS_MS = (
    1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
    300_000, 600_000, 1_800_000, 3_600_000,
)  # fmt: skip
"""From a workflow task's milliseconds to an hour-long run's end-to-end latency."""

Labels = tuple[tuple[str, str], ...]

logger = logging.getLogger(__name__)


@dataclass
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * len(HISTOGRAM_BUCKETS_MS))
    count: int = 0
    sum: float = 0.0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(HISTOGRAM_BUCKETS_MS, value)
        if index < len(self.buckets):
            self.buckets[index] += 1
        self.count += 1
        self.sum += value


@dataclass
class _Series:
    """One SDK metric: a value (counter, gauge) or a histogram per label set."""

    metric: BufferedMetric
    values: dict[Labels, float] = field(default_factory=dict)
    histograms: dict[Labels, _Histogram] = field(default_factory=dict)


class SdkMetrics(Collector):
    """A Temporal runtime whose metrics this collector serves (register it in a
    `CollectorRegistry`). The buffer is drained at each scrape and by `drain_forever`,
    so a process nobody scrapes does not make the SDK drop updates."""

    def __init__(self) -> None:
        self._buffer = MetricBuffer(BUFFER_SIZE)
        self.runtime = Runtime(telemetry=TelemetryConfig(metrics=self._buffer))
        self._series: dict[str, _Series] = {}
        # The SDK makes new attribute objects for some updates: the label sets are few,
        # each is sorted into labels once.
        self._labels: dict[frozenset[tuple[str, object]], Labels] = {}

    def drain(self) -> None:
        updates = self._buffer.retrieve_updates()
        # Within one drain the updates keep their metric and attribute objects alive, so
        # their ids name them: each is looked up once, not once per update.
        series_of: dict[int, _Series] = {}
        labels_of: dict[int, Labels] = {}
        for update in updates:
            metric = update.metric
            series = series_of.get(id(metric))
            if series is None:
                series = self._series.get(metric.name)
                if series is None:
                    series = self._series[metric.name] = _Series(metric)
                series_of[id(metric)] = series
            attributes = update.attributes
            labels = labels_of.get(id(attributes))
            if labels is None:
                labels = labels_of[id(attributes)] = self._labels_of(attributes)
            kind = series.metric.kind
            if kind == BUFFERED_METRIC_KIND_HISTOGRAM:
                histogram = series.histograms.get(labels)
                if histogram is None:
                    histogram = series.histograms[labels] = _Histogram()
                histogram.observe(update.value)
            elif kind == BUFFERED_METRIC_KIND_COUNTER:
                series.values[labels] = series.values.get(labels, 0) + update.value
            else:
                series.values[labels] = update.value

    async def drain_forever(self) -> None:
        while True:
            await asyncio.sleep(DRAIN_SECONDS)
            try:
                self.drain()
            except Exception:  # the next drain may succeed: /metrics lags, the API does not
                logger.exception("could not read the Temporal SDK's metrics")

    def describe(self) -> list[Metric]:
        return []  # names unknown until the SDK records: nothing to check for clashes

    def collect(self) -> Iterator[Metric]:
        self.drain()
        for name, series in sorted(self._series.items()):
            yield _family(name, series)

    def _labels_of(self, attributes: Mapping[str, object]) -> Labels:
        label_set = frozenset(attributes.items())
        labels = self._labels.get(label_set)
        if labels is None:
            labels = tuple(sorted((key, _label(value)) for key, value in label_set))
            self._labels[label_set] = labels
        return labels


def _family(name: str, series: _Series) -> Metric:
    metric = series.metric
    documentation = metric.description or name
    if metric.kind == BUFFERED_METRIC_KIND_HISTOGRAM:
        family = Metric(name, documentation, "histogram")
        for labels, histogram in series.histograms.items():
            cumulative = 0
            for bound, count in zip(HISTOGRAM_BUCKETS_MS, histogram.buckets, strict=True):
                cumulative += count
                family.add_sample(
                    f"{name}_bucket", {**dict(labels), "le": floatToGoString(bound)}, cumulative
                )
            family.add_sample(f"{name}_bucket", {**dict(labels), "le": "+Inf"}, histogram.count)
            family.add_sample(f"{name}_count", dict(labels), histogram.count)
            family.add_sample(f"{name}_sum", dict(labels), histogram.sum)
        return family
    if metric.kind == BUFFERED_METRIC_KIND_COUNTER:
        family = Metric(name, documentation, "counter")
        for labels, value in series.values.items():
            family.add_sample(f"{name}_total", dict(labels), value)
        return family
    family = Metric(name, documentation, "gauge")
    for labels, value in series.values.items():
        family.add_sample(name, dict(labels), value)
    return family


def _label(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
