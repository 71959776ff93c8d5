"""Experiments kept to re-measure one finding of the benchmark, each run from the
repository root as `python -m dev.experiments.<name>`. Each docstring opens with its
status; a concluded experiment that nothing needs to re-measure is removed, its
conclusion and the removing commit recorded in BENCHMARKS.md."""
