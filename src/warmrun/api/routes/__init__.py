"""The HTTP routes, one module per resource: `invoke`, `runs`, and `ops` (health,
readiness, info, metrics)."""
