"""Service routes: health, readiness, info, docs."""

from __future__ import annotations

import httpx

from conftest import PIPELINES
from warmrun.pipeline import load_pipeline
from warmrun.versioning import default_build_id


async def test_health_and_ready(sleepy: httpx.AsyncClient) -> None:
    assert (await sleepy.get("/health")).json() == {"status": "ok"}
    ready = await sleepy.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "temporal": True,
        "worker": True,
        "draining": False,
        "drained": False,  # its version is current
        "detail": None,
    }


async def test_info_describes_the_pipeline_and_its_temporal_home(
    sleepy: httpx.AsyncClient,
) -> None:
    info = (await sleepy.get("/info")).json()

    assert info["pipeline_name"] == "sleepy"
    assert info["deployment_name"] == "sleepy"
    assert info["task_queue"] == "warmrun-sleepy"
    assert info["namespace"] == "default"
    properties = info["parameters_schema"]["properties"]
    assert properties["seconds"] == {"default": 0.0, "title": "Seconds", "type": "number"}
    assert "ctx" not in properties
    assert info["parameters_schema"]["additionalProperties"] is False
    assert set(info["versions"]) == {"warmrun", "temporalio", "python"}
    # The first version of a deployment makes itself current.
    assert info["worker_deployment"] == "warmrun-sleepy"
    assert info["build_id"] == default_build_id(load_pipeline(f"{PIPELINES}:sleepy"))
    assert info["versioning"] == "pinned"
    assert info["current"] is True
    assert info["drained"] is False


async def test_docs_and_openapi_show_the_typed_parameters(sleepy: httpx.AsyncClient) -> None:
    assert (await sleepy.get("/docs")).status_code == 200
    spec = (await sleepy.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    assert "SleepyParameters" in schemas
    routes = {"/invoke", "/submit", "/runs/{run_id}", "/health", "/ready", "/info"}
    assert set(spec["paths"]) >= routes


async def test_metrics_expose_invocations_runs_and_queue_depth(serve) -> None:
    async with serve("sleepy", deployment="measured") as http:
        await http.post("/invoke", json={"parameters": {}})
        await http.post("/invoke", json={"parameters": {"fail": "boom"}})
        await http.post("/invoke", json={"parameters": {}, "async": True})
        await http.post("/invoke", json={"parameters": {"nope": 1}})

        text = (await http.get("/metrics")).text

    assert 'warmrun_invocations_total{code="200",mode="sync"} 2.0' in text
    assert 'warmrun_invocations_total{code="202",mode="async"} 1.0' in text
    assert 'warmrun_invocations_total{code="422",mode="rejected"} 1.0' in text
    assert 'warmrun_runs_finished_total{outcome="failed"} 1.0' in text
    assert 'warmrun_run_duration_seconds_count{outcome="succeeded"}' in text
    assert "warmrun_queue_depth " in text
    assert "warmrun_runs_executing " in text
