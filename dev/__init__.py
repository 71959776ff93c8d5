"""Developer tooling, run from the repository root with `python -m`: the benchmark
against raw Temporal (`dev.bench`) and the experiments kept to re-measure one of its
findings (`dev.experiments`). Not part of the installed `warmrun` package."""
