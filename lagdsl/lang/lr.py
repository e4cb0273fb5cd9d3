"""The learning rate at each mainline step: one pure function that the plan and the runtime share.

Steps count from 0 to `total - 1`. Warmup ramps linearly to the peak over its first `warmup`
steps, reaching it at step `warmup - 1`; then:

- `constant`: the peak;
- `cosine`: from the peak down to `min` along half a cosine, reaching `min` at the last step;
- `linear`: from the peak down to `min` in a straight line, reaching `min` at the last step;
- `wsd`: the peak until the last `decay` steps, then a straight line down to `min` at the last step.

A stage's `rewarm r` multiplies the LR of the stage's first `r` steps by a ramp that reaches 1 at
its `r`-th step: `min(1, (t - start + 1) / r)`.
"""

from __future__ import annotations

import math

from lagdsl.lang.schedule import LRSpec


def lr_at(step: int, spec: LRSpec, peak: float, total: int) -> float:
    """The schedule's LR at mainline `step` (without any stage's rewarm)."""
    if spec.warmup and step < spec.warmup:
        return peak * (step + 1) / spec.warmup
    if spec.kind == "constant":
        return peak
    if spec.kind == "wsd":
        start = total - spec.decay
        if step < start:
            return peak
        progress = (step - start + 1) / spec.decay
    else:
        span = total - spec.warmup
        progress = (step - spec.warmup + 1) / span if span > 0 else 1.0
    progress = min(max(progress, 0.0), 1.0)
    if spec.kind == "cosine":
        return spec.min + (peak - spec.min) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return spec.min + (peak - spec.min) * (1.0 - progress)


def rewarm_factor(step: int, stage_start: int, rewarm: int) -> float:
    """The multiplier a stage's `rewarm` applies at mainline `step`."""
    if rewarm <= 0:
        return 1.0
    return min(1.0, (step - stage_start + 1) / rewarm)
