"""warmrun: serve a long-running Python pipeline over HTTP, its runs on Temporal.

What pipeline code imports: its run's context and the exceptions it may raise. The
HTTP client is `warmrun.client`; helpers for other Temporal applications are in
`warmrun.temporal`; the run's contract (statuses, Temporal names, JSON shapes) is
`warmrun.run`.
"""

from warmrun.context import CancellationRequested, RetryableError, RunContext

__version__ = "0.1.0"

__all__ = ["CancellationRequested", "RetryableError", "RunContext", "__version__"]
