"""Piecewise-linear loss curves: where a curve first reaches a loss, and what it cost to get there."""

from __future__ import annotations

from collections.abc import Sequence


def interpolate(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """y at x on the piecewise-linear curve through (xs, ys) (xs increasing), clamped at the ends."""
    if not xs:
        raise ValueError("an empty curve")
    if x <= xs[0]:
        return ys[0]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys, strict=True), zip(xs[1:], ys[1:], strict=True), strict=False):
        if x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def first_reach(xs: Sequence[float], ys: Sequence[float], target: float) -> float | None:
    """The first x at which the piecewise-linear curve through (xs, ys) comes down to `target`,
    or None if it never does."""
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if y <= target:
            if i == 0:
                return x
            x0, y0 = xs[i - 1], ys[i - 1]
            return x0 + (x - x0) * (y0 - target) / (y0 - y)
    return None
