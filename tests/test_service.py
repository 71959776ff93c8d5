"""Service routes: health, readiness, info, docs."""

from __future__ import annotations

import httpx


async def test_health_and_ready(sleepy: httpx.AsyncClient) -> None:
    assert (await sleepy.get("/health")).json() == {"status": "ok"}
    ready = await sleepy.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "temporal": True, "worker": True}


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


async def test_docs_and_openapi_show_the_typed_parameters(sleepy: httpx.AsyncClient) -> None:
    assert (await sleepy.get("/docs")).status_code == 200
    spec = (await sleepy.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    assert "SleepyParameters" in schemas
    routes = {"/invoke", "/submit", "/runs/{run_id}", "/health", "/ready", "/info"}
    assert set(spec["paths"]) >= routes
