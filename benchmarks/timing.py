"""Shared timing for the benchmarks: median CPU time of interleaved rounds, so a load change on a
shared machine hits every case of one table alike (ratios are taken within one run)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def per_call(fn: Callable[[], object], budget: float = 0.05) -> float:
    """Seconds of CPU time per call: calls repeated until `budget` seconds have passed (once for
    slow calls), so microsecond numpy calls are not lost in the timer's resolution."""
    n, t0 = 0, time.process_time()
    while True:
        fn()
        n += 1
        dt = time.process_time() - t0
        if dt >= budget:
            return dt / n


def interleaved(cases: dict[str, Callable[[], object]], rounds: int = 5, budget: float = 0.05) -> dict[str, float]:
    """Median per-call CPU seconds of each case over `rounds` round-robin rounds (one warm-up call each)."""
    for fn in cases.values():
        fn()
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for key, fn in cases.items():
            samples[key].append(per_call(fn, budget))
    return {k: statistics.median(v) for k, v in samples.items()}


def fmt_seconds(t: float) -> str:
    if t < 1e-3:
        return f"{1e6 * t:.1f} us"
    if t < 1:
        return f"{1e3 * t:.1f} ms"
    return f"{t:.2f} s"
