"""warmrun against ZenML's own local deployer, serving one 3-step noop ZenML pipeline.

    .venv/bin/python -m dev.bench_zenml [--quick] [--out dev/results/bench_zenml.json]

Everything runs here, in one run: a throwaway ZenML store and repository in a temp
dir, a Temporal dev server, `zenml pipeline deploy` of `workloads/zenml_noop.py` with
ZenML's `local` deployer (its own deployment server process), then `warmrun serve` of
the same pipeline. Each side gets, in turn, with the other one idle:

- sync p50: N sequential `POST /invoke`;
- 20 and 50 concurrent sync `POST /invoke`: wall time, failures (non-200 or
  `success: false`) and their messages;
- async: 50 concurrent accepts (ZenML: `POST /submit`, warmrun: `POST /invoke` with
  `async: true`), accepts/s; then how the accepted runs ended in ZenML's store, and how
  many were still not finished after `--settle` seconds (stuck runs).

And the accept path alone: API-only replicas (`--no-worker`) of a plain noop function
and of the ZenML pipeline, each accepting the same number of async runs at the same
concurrency, twice, interleaved: the ZenML pipeline's accepts/s over the function's.

Traffic goes to 127.0.0.1 only; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ROOT / "dev" / "bench" / "workloads"
WARMRUN = str(Path(sys.executable).parent / "warmrun")
TIMEOUT = 300.0


def zenml_environment(home: Path) -> Path:
    """A ZenML configuration and repository of this run's own, set before zenml loads."""
    repo = home / "repo"
    repo.mkdir(parents=True)
    shutil.copy(WORKLOADS / "zenml_noop.py", repo)
    os.environ.update(
        {
            "ZENML_CONFIG_PATH": str(home / "config"),
            "ZENML_LOCAL_STORES_PATH": str(home / "stores"),
            "ZENML_REPOSITORY_PATH": str(repo),
            "ZENML_ANALYTICS_OPT_IN": "false",
            "ZENML_ENABLE_RICH_TRACEBACK": "false",
            "ZENML_LOGGING_COLORS_DISABLED": "true",
            "AUTO_OPEN_DASHBOARD": "false",
            "ZENML_LOGGING_VERBOSITY": "WARN",
        }
    )
    sys.path.insert(0, str(repo))
    return repo


async def call(
    http: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> tuple[bool, str, float, str | None]:
    """One request: ok, why not, seconds, the run id it named."""
    started = time.perf_counter()
    try:
        answer = await http.post(path, json=body, timeout=TIMEOUT)
    except httpx.HTTPError as err:
        return False, f"{type(err).__name__}: {err}"[:160], time.perf_counter() - started, None
    elapsed = time.perf_counter() - started
    if answer.status_code not in (200, 202):
        return False, f"HTTP {answer.status_code}: {answer.text[:160]}", elapsed, None
    data = answer.json()
    # A sync answer says whether the run succeeded; ZenML's `/submit` answers 200 at once.
    if path == "/invoke" and answer.status_code == 200 and not data.get("success", False):
        return False, f"success=false: {str(data.get('error'))[:160]}", elapsed, None
    return True, "", elapsed, data.get("run_id")


def failures_of(results: list[tuple[bool, str, float, str | None]]) -> dict[str, int]:
    return dict(collections.Counter(why for ok, why, _, _ in results if not ok).most_common(5))


async def measure(url: str, submit: str, body: dict[str, Any], sequential: int) -> dict[str, Any]:
    """Sync p50, 20 and 50 concurrent sync calls, 50 concurrent async accepts."""
    result: dict[str, Any] = {}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, limits=limits) as http:
        times = [(await call(http, "/invoke", body))[2] for _ in range(sequential)]
        result["sync_p50_s"] = round(statistics.median(times), 3)
        result["sync_min_max_s"] = [round(min(times), 3), round(max(times), 3)]
        for concurrency in (20, 50):
            started = time.perf_counter()
            answers = await asyncio.gather(
                *(call(http, "/invoke", body) for _ in range(concurrency))
            )
            result[f"sync_{concurrency}"] = {
                "wall_s": round(time.perf_counter() - started, 2),
                "failed": sum(not ok for ok, *_ in answers),
                "latency_p50_s": round(statistics.median(a[2] for a in answers), 2),
                "latency_max_s": round(max(a[2] for a in answers), 2),
                "failures": failures_of(answers),
            }
        submit_body = {**body, "async": True} if submit == "/invoke" else body
        started = time.perf_counter()
        answers = await asyncio.gather(*(call(http, submit, submit_body) for _ in range(50)))
        wall = time.perf_counter() - started
        result["async_50"] = {
            "route": submit,
            "accepts_per_s": round(sum(ok for ok, *_ in answers) / wall, 1),
            "failed": sum(not ok for ok, *_ in answers),
            "failures": failures_of(answers),
        }
        result["accepted_run_ids"] = [run_id for ok, _, _, run_id in answers if ok and run_id]
    return result


def zenml_run_statuses(since: datetime) -> dict[str, int]:
    """How the runs of the noop pipeline created since `since` stand in ZenML's store."""
    from zenml.client import Client

    runs = Client().list_pipeline_runs(
        pipeline_name="noop_pipeline",
        created=f"gte:{since.replace(tzinfo=None):%Y-%m-%d %H:%M:%S}",
        size=1000,
    )
    return dict(collections.Counter(run.status.value for run in runs.items))


async def settle(since: datetime, seconds: float) -> dict[str, Any]:
    """Wait (bounded) until every run since `since` finished; what is left is stuck."""
    from zenml.enums import ExecutionStatus

    finished = {status.value for status in ExecutionStatus if status.is_finished}
    deadline = time.monotonic() + seconds
    while True:
        statuses = await asyncio.to_thread(zenml_run_statuses, since)
        open_runs = sum(n for status, n in statuses.items() if status not in finished)
        if not open_runs or time.monotonic() > deadline:
            return {"statuses": statuses, "not_finished": open_runs}
        await asyncio.sleep(2)


def deploy_with_zenml(port: int) -> Any:
    """`zenml pipeline deploy` with the `local` deployer: ZenML's own server process."""
    import zenml_noop
    from zenml.client import Client
    from zenml.enums import StackComponentType

    client = Client()
    client.create_stack_component(
        name="bench-local",
        flavor="local",
        component_type=StackComponentType.DEPLOYER,
        configuration={},
    )
    client.create_stack(
        name="bench-local",
        components={
            StackComponentType.ORCHESTRATOR: "default",
            StackComponentType.ARTIFACT_STORE: "default",
            StackComponentType.DEPLOYER: "bench-local",
        },
    )
    client.activate_stack("bench-local")
    try:
        pipeline = zenml_noop.noop_pipeline.with_options(
            settings={"deployer": {"port": port, "lcm_timeout": 180}}
        )
        return pipeline.deploy(deployment_name="bench-noop")
    finally:
        client.activate_stack("default")


def serve(
    reference: str, port: int, deployment: str, temporal: str, log: Path, *flags: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal,
        "WARMRUN_DEPLOYMENT": deployment,
        "WARMRUN_MAX_PENDING_RUNS": "100000",
    }
    with log.open("wb") as sink:
        return subprocess.Popen(
            [WARMRUN, "serve", reference, "--port", str(port), "--log-level", "warning", *flags],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


async def ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        for _ in range(1200):
            if process.poll() is not None:
                raise RuntimeError(f"warmrun serve exited; see {log}")
            try:
                if (await http.get("/ready")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"warmrun serve never ready; see {log}")


async def wait_runs(url: str, run_ids: list[str], seconds: float) -> dict[str, int]:
    """Bounded: poll each accepted run until it ended; count how they ended."""
    deadline = time.monotonic() + seconds
    statuses: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        while time.monotonic() < deadline:
            for run_id in run_ids:
                if statuses.get(run_id) in {"succeeded", "failed", "cancelled", "timed_out"}:
                    continue
                statuses[run_id] = (await http.get(f"/runs/{run_id}")).json()["status"]
            if all(
                s in {"succeeded", "failed", "cancelled", "timed_out"} for s in statuses.values()
            ):
                break
            await asyncio.sleep(1)
    return dict(collections.Counter(statuses.values()))


async def accept_rate(url: str, body: dict[str, Any], count: int, concurrency: int) -> float:
    """Async accepts/s at `concurrency` callers (each one request after another)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits) as http:
        for _ in range(20):  # warm the connections and the route
            await call(http, "/invoke", {**body, "async": True})
        queue = list(range(count))

        async def lane() -> None:
            while queue:
                queue.pop()
                ok, why, *_ = await call(http, "/invoke", {**body, "async": True})
                assert ok, why

        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        return count / (time.perf_counter() - started)


async def run(args: argparse.Namespace, repo: Path, work: Path) -> dict[str, Any]:
    from zenml.client import Client

    from warmrun.devserver import DevServer, free_port

    Client.initialize(root=repo)
    body = {"parameters": {"x": 1}}
    sequential = 5 if args.quick else 10
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(),
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "results": {},
    }
    results = report["results"]
    async with DevServer(port=free_port(), ui_port=None, log_level="error") as server:
        print("deploying with ZenML's local deployer ...", flush=True)
        deployment = await asyncio.to_thread(deploy_with_zenml, free_port())
        try:
            since = datetime.now(UTC)
            print(f"ZenML local deployer at {deployment.url}", flush=True)
            results["zenml_local_deployer"] = await measure(
                deployment.url, "/submit", body, sequential
            )
            results["zenml_local_deployer"].pop("accepted_run_ids")
            results["zenml_local_deployer"]["zenml_runs"] = await settle(since, args.settle)
        finally:
            await asyncio.to_thread(Client().deprovision_deployment, "bench-noop")
        print(json.dumps(results["zenml_local_deployer"]), flush=True)

        port = free_port()
        reference = f"{repo / 'zenml_noop.py'}:noop_pipeline"
        log = work / "warmrun-zenml.log"
        process = serve(reference, port, "bench-zenml", server.address, log)
        try:
            url = f"http://127.0.0.1:{port}"
            await ready(url, process, log)
            since = datetime.now(UTC)
            print(f"warmrun at {url}", flush=True)
            measured = await measure(url, "/invoke", body, sequential)
            results["warmrun"] = measured
            run_ids = measured.pop("accepted_run_ids")
            measured["async_50"]["runs"] = await wait_runs(url, run_ids, args.settle)
            measured["zenml_runs"] = await settle(since, args.settle)
        finally:
            process.terminate()
            process.wait(60)
        print(json.dumps(results["warmrun"]), flush=True)

        # The accept path alone: API-only replicas, nothing executes.
        plain_port, zenml_port = free_port(), free_port()
        plain = serve(
            f"{WORKLOADS / 'noop_pipeline.py'}:noop",
            plain_port,
            "bench-accept-plain",
            server.address,
            work / "accept-plain.log",
            "--no-worker",
        )
        zenml_api = serve(
            reference,
            zenml_port,
            "bench-accept-zenml",
            server.address,
            work / "accept-zenml.log",
            "--no-worker",
        )
        try:
            plain_url, zenml_url = (
                f"http://127.0.0.1:{plain_port}",
                f"http://127.0.0.1:{zenml_port}",
            )
            await ready(plain_url, plain, work / "accept-plain.log")
            await ready(zenml_url, zenml_api, work / "accept-zenml.log")
            count = 100 if args.quick else 400
            rates: dict[str, list[float]] = {"plain_function": [], "zenml_pipeline": []}
            for _ in range(2):
                rates["plain_function"].append(
                    await accept_rate(plain_url, {"parameters": {}}, count, 16)
                )
                rates["zenml_pipeline"].append(await accept_rate(zenml_url, body, count, 16))
        finally:
            for process in (plain, zenml_api):
                process.terminate()
                process.wait(60)
        results["accept_path"] = {
            "concurrency": 16,
            "runs_per_round": count,
            "accepts_per_s": {
                name: [round(r, 1) for r in values] for name, values in rates.items()
            },
            "ratio": round(
                statistics.mean(rates["zenml_pipeline"]) / statistics.mean(rates["plain_function"]),
                2,
            ),
        }
        print(json.dumps(results["accept_path"]), flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sequential calls and accepts")
    parser.add_argument(
        "--settle", type=float, default=120.0, help="seconds to wait for runs to end"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "dev" / "results" / "bench_zenml.json")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="warmrun-bench-zenml-"))
    repo = zenml_environment(home)
    try:
        report = asyncio.run(run(args, repo, home))
    except BaseException:
        print(f"failed; the logs and the ZenML store are kept in {home}", file=sys.stderr)
        raise
    shutil.rmtree(home, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
