"""ASGI middleware: what every request passes through before (and after) its route."""

from warmrun.api.middleware.auth import AuthMiddleware
from warmrun.api.middleware.body_limit import BodyLimitMiddleware
from warmrun.api.middleware.invocation_metrics import InvocationMetricsMiddleware

__all__ = ["AuthMiddleware", "BodyLimitMiddleware", "InvocationMetricsMiddleware"]
