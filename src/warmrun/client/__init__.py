"""Python client of a warmrun deployment: run pipelines, follow and cancel their runs.

```python
from warmrun.client import DeploymentClient, RunFailed

with DeploymentClient("http://127.0.0.1:8000", token="...") as sentiment:
    outputs = sentiment.invoke({"texts": ["warmrun is great"]})   # blocks until the end

    run = sentiment.submit({"texts": [...]}, idempotency_key="batch-42")
    for snapshot in run.watch():                                   # live progress
        print(snapshot.status, snapshot.progress)
    try:
        print(run.result())
    except RunFailed as err:
        print(err.run.error)
```

`AsyncDeploymentClient` is the same API for asyncio code. The runs it returns are the
server's own resource models (`warmrun.resource`): a `Run` here is exactly what
`GET /runs/{run_id}` answers.
"""

from warmrun.client._async import AsyncDeploymentClient, AsyncRunHandle
from warmrun.client._errors import (
    APIError,
    Backpressure,
    DeploymentUnreachable,
    NotFound,
    RunCancelled,
    RunEndedBadly,
    RunFailed,
    RunTimedOut,
    Unauthorized,
    Unavailable,
    Unsupported,
    WaitTimedOut,
    WarmrunError,
)
from warmrun.client._sync import DeploymentClient, RunHandle
from warmrun.resource import AcceptedRun, Run, RunLinks, RunWebhook
from warmrun.run import Progress, RunError, RunStatus
from warmrun.webhooks import verify_webhook

__all__ = [
    "APIError",
    "AcceptedRun",
    "AsyncDeploymentClient",
    "AsyncRunHandle",
    "Backpressure",
    "DeploymentClient",
    "DeploymentUnreachable",
    "NotFound",
    "Progress",
    "Run",
    "RunCancelled",
    "RunEndedBadly",
    "RunError",
    "RunFailed",
    "RunHandle",
    "RunLinks",
    "RunStatus",
    "RunTimedOut",
    "RunWebhook",
    "Unauthorized",
    "Unavailable",
    "Unsupported",
    "WaitTimedOut",
    "WarmrunError",
    "verify_webhook",
]

# Tracebacks and docs name the public path of what this package defines.
for _name in __all__:
    _item = globals()[_name]
    if getattr(_item, "__module__", "").startswith("warmrun.client."):
        _item.__module__ = "warmrun.client"
