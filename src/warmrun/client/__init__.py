"""Python client of a warmrun deployment: run pipelines, follow and cancel their runs.

```python
from warmrun.client import Deployment, RunFailed

with Deployment("http://127.0.0.1:8000", token="...") as sentiment:
    outputs = sentiment.invoke({"texts": ["warmrun is great"]})   # blocks until the end

    run = sentiment.submit({"texts": [...]}, idempotency_key="batch-42")
    for snapshot in run.watch():                                   # live progress
        print(snapshot.status, snapshot.progress)
    try:
        print(run.result())
    except RunFailed as err:
        print(err.run.error)
```

`AsyncDeployment` is the same API for asyncio code.
"""

from warmrun.client._async import AsyncDeployment, AsyncRunHandle
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
from warmrun.client._models import (
    AcceptedRun,
    Run,
    RunErrorInfo,
    RunLinks,
    RunProgress,
    RunStatus,
    RunWebhook,
)
from warmrun.client._sync import Deployment, RunHandle
from warmrun.webhooks import verify_webhook

__all__ = [
    "APIError",
    "AcceptedRun",
    "AsyncDeployment",
    "AsyncRunHandle",
    "Backpressure",
    "Deployment",
    "DeploymentUnreachable",
    "NotFound",
    "Run",
    "RunCancelled",
    "RunEndedBadly",
    "RunErrorInfo",
    "RunFailed",
    "RunHandle",
    "RunLinks",
    "RunProgress",
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
