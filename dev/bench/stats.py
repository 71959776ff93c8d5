"""Latency and throughput summaries, and the warmrun / raw ratios built from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    """Latency and throughput of one measured phase."""

    n: int
    concurrency: int
    seconds: float
    throughput: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    extra: dict[str, Any] = field(default_factory=dict)


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 1))))
    return ordered[rank - 1]


def summarise(latencies: list[float], seconds: float, concurrency: int) -> Stats:
    ordered = sorted(latencies)
    ms = [value * 1000 for value in ordered]
    return Stats(
        n=len(ms),
        concurrency=concurrency,
        seconds=round(seconds, 3),
        throughput=round(len(ms) / seconds, 1) if seconds else 0.0,
        p50_ms=round(percentile(ms, 0.50), 3),
        p90_ms=round(percentile(ms, 0.90), 3),
        p99_ms=round(percentile(ms, 0.99), 3),
        mean_ms=round(sum(ms) / len(ms), 3),
        max_ms=round(ms[-1], 3),
    )


def combined(parts: list[Stats], latencies: list[float]) -> Stats:
    """One side's rounds as one measurement: all latencies, the total time, CPU per
    operation weighted by each round's operations; each round's figures kept."""
    n = sum(part.n for part in parts)
    stats = summarise(latencies, sum(part.seconds for part in parts), parts[0].concurrency)
    for key in ("cpu_ms_per_op", "warmrun_threads_cpu_ms_per_op"):
        totals: dict[str, float] = {}
        for part in parts:
            for name, ms in part.extra.get(key, {}).items():
                totals[name] = totals.get(name, 0.0) + ms * part.n / n
        stats.extra[key] = {name: round(ms, 3) for name, ms in totals.items()}
    stats.extra["cpu_utilisation"] = utilisation(stats.extra["cpu_ms_per_op"], n, stats.seconds)
    stats.extra["rounds"] = [
        {"throughput": part.throughput, "p50_ms": part.p50_ms, "p99_ms": part.p99_ms}
        for part in parts
    ]
    return stats


def utilisation(cpu_ms_per_op: dict[str, float], n: int, seconds: float) -> dict[str, float]:
    """Cores each process kept busy over a measurement."""
    return {process: round(ms * n / 1000 / seconds, 2) for process, ms in cpu_ms_per_op.items()}


def round_ratios(warm: Stats, raw: Stats) -> list[float | None]:
    """warmrun / raw throughput in each round."""
    return [
        ratio(mine["throughput"], theirs["throughput"])
        for mine, theirs in zip(warm.extra["rounds"], raw.extra["rounds"], strict=True)
    ]


def ratio(warmrun_value: float, raw_value: float) -> float | None:
    return round(warmrun_value / raw_value, 3) if raw_value else None
