"""Timing helpers shared by the benchmarks: interleaved repeats, medians, a ratio.

The machines are shared and noisy, so two candidates are timed in alternation (A, B, A, B, ...)
and compared by their medians; the ratio is what to trust, not the absolute milliseconds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def time_call(fn: Callable[[], object], repeats: int) -> list[float]:
    """Seconds for each of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def interleaved(
    candidates: Mapping[str, Callable[[], object]],
    steps: int,
    warmup: int = 5,
    rounds: int = 10,
) -> dict[str, float]:
    """Median seconds per call of each candidate, timed in alternating rounds."""
    for fn in candidates.values():
        time_call(fn, warmup)
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    per_round = max(1, steps // rounds)
    for _ in range(rounds):
        for name, fn in candidates.items():
            samples[name].extend(time_call(fn, per_round))
    return {name: statistics.median(values) for name, values in samples.items()}


def report(title: str, medians: Mapping[str, float], baseline: str) -> str:
    """A small table of milliseconds per step and the ratio to ``baseline``."""
    lines = [title, f"{'':<24}{'ms/step':>10}{'ratio':>8}"]
    base = medians[baseline]
    for name, seconds in medians.items():
        lines.append(f"{name:<24}{seconds * 1e3:>10.3f}{seconds / base:>8.2f}")
    return "\n".join(lines)
