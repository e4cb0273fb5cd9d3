"""Rank correlations and summaries, exact and small (the study has a handful of candidates), and the
study's evidence: bootstrap intervals over seeds and candidates, and a paired test between lags.

`spearman` is Pearson's correlation of average ranks; `kendall` is Kendall's tau-b, which corrects
for ties in either variable. Both return NaN where a variable is constant (no ranking to compare),
as scipy does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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


# -- intervals and a paired test (the study's evidence)

BOOTSTRAP = 2000  # resamples; percentile intervals at 95%


@dataclass(frozen=True)
class Interval:
    """A statistic's 95% bootstrap interval (None where it cannot be computed)."""

    low: float | None
    high: float | None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def bootstrap_interval(
    seeds: Sequence[tuple[Sequence[float], Sequence[float]]],
    statistic: Callable[[Sequence[float], Sequence[float]], float],
    resamples: int = BOOTSTRAP,
    seed: int = 0,
) -> Interval:
    """A 95% percentile interval of the mean over seeds of `statistic(at_lag, final)`, resampling
    seeds and, within each, candidates (pairs kept together), both with replacement: the
    uncertainty from the seeds run and from the candidates that happened to be compared."""
    import random

    if not seeds:
        return Interval(None, None)
    draw = random.Random(seed)
    means = []
    for _ in range(resamples):
        values = []
        for _ in seeds:
            at_lag, final = seeds[draw.randrange(len(seeds))]
            picks = [draw.randrange(len(final)) for _ in final]
            value = statistic([at_lag[i] for i in picks], [final[i] for i in picks])
            if not math.isnan(value):
                values.append(value)
        if values:
            means.append(sum(values) / len(values))
    if len(means) < resamples // 2:  # mostly undefined (constant resamples): no interval
        return Interval(None, None)
    return Interval(_percentile(means, 0.025), _percentile(means, 0.975))


def regret(at_lag: Sequence[float], final: Sequence[float]) -> float:
    """The final loss of the candidate `at_lag` picks, above the best final loss."""
    return final[argmin(at_lag)] - min(final)


@dataclass(frozen=True)
class PairedTest:
    """Is a statistic larger at one lag than at another, seed by seed? The mean difference, its 95%
    bootstrap interval over seeds, and the one-sided p-value of an exact sign-flip test (the
    differences' signs flipped in every way: under no effect each is as likely)."""

    mean: float | None
    low: float | None
    high: float | None
    p_value: float | None
    n: int


def paired_greater(
    first: Sequence[float | None], second: Sequence[float | None], resamples: int = BOOTSTRAP, seed: int = 0
) -> PairedTest:
    """Whether `first` exceeds `second` (per seed, pairs where both are known)."""
    import itertools
    import random

    differences = [a - b for a, b in zip(first, second, strict=True) if a is not None and b is not None]
    n = len(differences)
    if n == 0:
        return PairedTest(None, None, None, None, 0)
    mean = sum(differences) / n
    draw = random.Random(seed)
    means = [sum(draw.choice(differences) for _ in range(n)) / n for _ in range(resamples)]
    if n <= 16:
        flips = [sum(s * d for s, d in zip(signs, differences, strict=True)) / n
                 for signs in itertools.product((1, -1), repeat=n)]  # fmt: skip
    else:
        flips = [sum(draw.choice((1, -1)) * d for d in differences) / n for _ in range(resamples)]
    p_value = sum(1 for f in flips if f >= mean - 1e-12) / len(flips)
    return PairedTest(mean, _percentile(means, 0.025), _percentile(means, 0.975), p_value, n)
