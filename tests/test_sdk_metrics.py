"""The Temporal SDK's metrics in the deployment's `/metrics`, without a port of their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from temporalio.client import Client

from conftest import ServeFn
from warmrun.devserver import DevServer
from warmrun.sdk_metrics import HISTOGRAM_BUCKETS_MS, SdkMetrics


def scrape(registry: CollectorRegistry) -> dict[str, list[Sample]]:
    text = generate_latest(registry).decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def of_pipeline_runs(samples: list[Sample], name: str) -> list[Sample]:
    return [
        sample
        for sample in samples
        if sample.name == name
        and sample.labels.get("workflow_type") == "PipelineRun"
        and sample.labels.get("task_queue") == "warmrun-sleepy"
    ]


async def test_the_sdk_series_add_up_across_scrapes(serve: ServeFn, dev_server: DevServer) -> None:
    sdk = SdkMetrics()
    registry = CollectorRegistry()
    registry.register(sdk)
    client = await Client.connect(dev_server.address, runtime=sdk.runtime)
    async with serve("sleepy", client=client) as http:
        first = await http.post("/invoke", json={"parameters": {"steps": 1}})
        assert first.json()["success"] is True
        before = scrape(registry)
        second = await http.post("/invoke", json={"parameters": {"steps": 1}})
        assert second.json()["success"] is True
        after = scrape(registry)

    # Counters: the SDK hands deltas, the series holds their sum.
    completed = "temporal_workflow_completed"
    assert [s.value for s in of_pipeline_runs(before[completed], f"{completed}_total")] == [1]
    assert [s.value for s in of_pipeline_runs(after[completed], f"{completed}_total")] == [2]

    # Histograms: one observation per run, cumulative buckets in milliseconds.
    latency = after["temporal_workflow_endtoend_latency"]
    [count] = of_pipeline_runs(latency, "temporal_workflow_endtoend_latency_count")
    [total] = of_pipeline_runs(latency, "temporal_workflow_endtoend_latency_sum")
    buckets = of_pipeline_runs(latency, "temporal_workflow_endtoend_latency_bucket")
    assert count.value == 2
    assert total.value > 0
    assert [b.labels["le"] for b in buckets][-1] == "+Inf"
    assert len(buckets) == len(HISTOGRAM_BUCKETS_MS) + 1
    cumulative = [b.value for b in buckets]
    assert cumulative == sorted(cumulative) and cumulative[-1] == 2

    # Gauges: the last value the SDK set.
    slots = after["temporal_worker_task_slots_available"]
    assert any(s.labels.get("task_queue") == "warmrun-sleepy" for s in slots)
    # The request counter's label sets differ by operation: each is a series of its own.
    requests = {s.labels["operation"] for s in after["temporal_request"]}
    assert "StartWorkflowExecution" in requests
