"""Timing on a shared, noisy machine: adjacent pairs, alternating order, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` took."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@dataclass
class Pairs:
    """``reps`` adjacent (base, other) timings in seconds and their ratios other / base."""

    base: list[float]
    other: list[float]

    @property
    def ratios(self) -> list[float]:
        return [o / b for b, o in zip(self.base, self.other)]

    @property
    def ratio(self) -> float:
        """Median of the per-pair ratios: drift slower than one pair cancels out."""
        return statistics.median(self.ratios)

    @property
    def base_ms(self) -> float:
        return statistics.median(self.base) * 1000


def paired(base: Callable[[], object], other: Callable[[], object], reps: int, warmup: int = 2) -> Pairs:
    """Time ``base`` and ``other`` back to back ``reps`` times, after ``warmup`` untimed
    calls of each. The order alternates (base first, then other first) so that whatever
    favours the first or second call of a pair (caches, frequency) hits both equally."""
    for _ in range(warmup):
        base()
        other()
    out = Pairs([], [])
    for i in range(reps):
        if i % 2 == 0:
            b = timed(base)
            o = timed(other)
        else:
            o = timed(other)
            b = timed(base)
        out.base.append(b)
        out.other.append(o)
    return out
