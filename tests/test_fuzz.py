"""schemathesis against the app's own OpenAPI spec: no 5xx, no schema violations.

The deployment is a real `warmrun serve` process on the session's dev server, so the
fuzzer's requests go over real HTTP and start real runs.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from test_cli import running, wait_until_ready
from warmrun.devserver import DevServer, free_port

WARMRUN = str(Path(sys.executable).parent / "warmrun")
PIPELINE = f"{Path(__file__).parent / 'pipelines.py'}:echo"
EXAMPLES_PER_OPERATION = 40
TOKEN = "fuzz-token"
AUTHORIZED = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def fuzzed_deployment(
    dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": dev_server.address,
        "WARMRUN_DEPLOYMENT": "fuzz",
        "WARMRUN_HEARTBEAT_TIMEOUT": "3",
        "WARMRUN_MAX_TIMEOUT": "30",
        "WARMRUN_MAX_PENDING_RUNS": "100000",
        "WARMRUN_AUTH_TOKEN": TOKEN,
    }
    command = [WARMRUN, "serve", PIPELINE, "--port", str(port), "--log-level", "warning"]
    with running(command, cwd=tmp_path_factory.mktemp("fuzz"), env=env) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, process, headers=AUTHORIZED)
        yield url


def test_api_answers_within_its_schema_and_never_5xx(fuzzed_deployment: str) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed_deployment}/openapi.json", headers=AUTHORIZED)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 6

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def answers_well(case: schemathesis.Case) -> None:
            key = (case.headers or {}).get("Idempotency-Key")
            if key and len(key) <= 200:
                # Hypothesis reuses keys across bodies; a reused key is a legitimate 422
                # (idempotency_key_reused) that no schema can express, so keep them apart.
                case.headers["Idempotency-Key"] = f"{key}-{uuid.uuid4().hex}"
            if case.query and "page_token" in case.query:
                del case.query["page_token"]  # opaque: only the server makes valid ones
            if isinstance(case.body, dict) and case.body.get("callback_url"):
                # Whether a target may be called depends on DNS and the server's
                # allow-list (422 callback_url_refused), not on the schema.
                del case.body["callback_url"]
            case.call_and_validate(headers=AUTHORIZED, timeout=30)

        answers_well()
