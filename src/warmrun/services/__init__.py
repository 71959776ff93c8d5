"""The run services: what a deployment does with runs, without HTTP.

Domain in, domain out, like a FastAPI app's `crud.py`: each module does one job on
the runs Temporal holds and raises the exceptions of `errors`; the HTTP layer
(`warmrun.api`) turns their results into answers and their errors into problems.

- `start`: start a run (or find the one its Idempotency-Key names); the start
  options every entry point (the HTTP API, the Nexus service) starts a run with
- `read`: read one run, and wait for one to end
- `listing`: list a deployment's runs
- `cancel`: ask a run to stop
- `backlog`: admission control over the deployment's open runs
- `idempotency`: Idempotency-Key run ids and request fingerprints
- `webhook_state`: how a run's webhook delivery is going
"""
