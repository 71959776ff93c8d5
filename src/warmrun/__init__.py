"""warmrun: serve a long-running Python pipeline over HTTP, its runs on Temporal."""

from warmrun.context import RetryableError, RunCancelled, RunContext

__version__ = "0.1.0"

__all__ = ["RetryableError", "RunCancelled", "RunContext", "__version__"]
