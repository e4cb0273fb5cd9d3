"""Rank correlations and summaries, exact and small (the study has a handful of candidates).

`spearman` is Pearson's correlation of average ranks; `kendall` is Kendall's tau-b, which corrects
for ties in either variable. Both return NaN where a variable is constant (no ranking to compare),
as scipy does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for position in range(i, j + 1):
            result[order[position]] = (i + j) / 2 + 1
        i = j + 1
    return result


def _check(x: Sequence[float], y: Sequence[float]) -> None:
    if len(x) != len(y):
        raise ValueError(f"the two samples differ in length ({len(x)} and {len(y)})")


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    _check(x, y)
    n = len(x)
    if n < 2:
        return math.nan
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return math.nan
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation coefficient rho."""
    _check(x, y)
    return pearson(ranks(x), ranks(y))


def kendall(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b: (concordant - discordant) / sqrt((n0 - ties_x) (n0 - ties_y))."""
    _check(x, y)
    n = len(x)
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                ties_x += 1
                ties_y += 1
            elif dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    pairs = n * (n - 1) // 2
    denominator = math.sqrt((pairs - ties_x) * (pairs - ties_y))
    if denominator == 0:
        return math.nan
    return (concordant - discordant) / denominator


def argmin(values: Sequence[float]) -> int:
    """The index of the smallest value; ties go to the first (as the engine's selection does)."""
    return min(range(len(values)), key=lambda i: (values[i], i))


@dataclass(frozen=True)
class Spread:
    """A mean over seeds with its sample standard deviation, extremes and count (NaNs left out)."""

    mean: float
    std: float
    low: float
    high: float
    n: int

    @staticmethod
    def of(values: Sequence[float]) -> Spread:
        kept = [v for v in values if not math.isnan(v)]
        if not kept:
            return Spread(math.nan, math.nan, math.nan, math.nan, 0)
        mean = sum(kept) / len(kept)
        std = math.sqrt(sum((v - mean) ** 2 for v in kept) / (len(kept) - 1)) if len(kept) > 1 else 0.0
        return Spread(mean, std, min(kept), max(kept), len(kept))

    def show(self, digits: int = 3) -> str:
        if self.n == 0:
            return "n/a"
        if self.n == 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"

    def as_dict(self) -> dict[str, float | int | None]:
        def clean(v: float) -> float | None:
            return None if math.isnan(v) else v

        return {"mean": clean(self.mean), "std": clean(self.std), "min": clean(self.low), "max": clean(self.high),
                "n": self.n}  # fmt: skip
