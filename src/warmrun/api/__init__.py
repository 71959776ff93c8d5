"""The HTTP layer: FastAPI routes translating Temporal's view of runs."""

from warmrun.api.app import create_app

__all__ = ["create_app"]
