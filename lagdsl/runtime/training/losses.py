"""Training losses kept on the device until they are needed.

Reading a loss (`.item()`) makes the host wait for the device: on a GPU, once per step, that idles
the device between steps. So a step's loss stays a tensor: the engine reads the pending ones
together, with one transfer, at `log every` steps, at the end of each stretch of training (before
a growth, a probe, an evaluation or a checkpoint), and a probe reads its candidate's at the end of
its k steps. The check for a non-finite loss happens on that read and still names the step where
the loss first became non-finite; a checkpoint is never written of non-finite weights (the run
checks the weights themselves first).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from lagdsl.lang.schedule import Stage


class NonFiniteLoss(Exception):
    """Training diverged: the loss (or, found before a checkpoint, the weights) is not finite."""

    def __init__(self, stage: str, step: int, loss: float, what: str | None = None) -> None:
        super().__init__(f"{what or f'the loss became {loss}'} at step {step} in stage `{stage}`")
        self.stage, self.step, self.loss = stage, step, loss


class ProbeDiverged(NonFiniteLoss):
    """Every candidate of a probe diverged: resuming would diverge the same way."""

    def __init__(self, stage: str, step: int, message: str) -> None:
        Exception.__init__(self, message)
        self.stage, self.step, self.loss = stage, step, math.nan


def _read(losses: list[torch.Tensor], where: list[tuple[str, int]]) -> list[float]:
    """The values of `losses` with one transfer; `NonFiniteLoss` at the first non-finite one, named
    by its (stage, step) in `where`."""
    if not losses:
        return []
    values = torch.stack([loss.reshape(()).float() for loss in losses]).tolist()
    for (stage, step), value in zip(where, values, strict=True):
        if not math.isfinite(value):
            raise NonFiniteLoss(stage, step, value)
    return values


def read(losses: list[torch.Tensor], stage: str, first_step: int) -> list[float]:
    """The values of consecutive steps' `losses` (from `first_step`, in `stage`)."""
    return _read(losses, [(stage, first_step + offset) for offset in range(len(losses))])


@dataclass
class Pending:
    """The mainline steps trained since the last read: (stage, step, loss on the device, LR)."""

    steps: list[tuple[Stage, int, torch.Tensor, float]] = field(default_factory=list)

    def add(self, stage: Stage, step: int, loss: torch.Tensor, lr: float) -> None:
        self.steps.append((stage, step, loss, lr))

    def take(self) -> list[tuple[Stage, int, float, float]]:
        """The pending steps with their losses read, emptied."""
        steps, self.steps = self.steps, []
        values = _read([loss for _, _, loss, _ in steps], [(stage.name, step) for stage, step, _, _ in steps])
        return [(stage, step, value, lr) for (stage, step, _, lr), value in zip(steps, values, strict=True)]


class _Mixed(Protocol):
    def aux_losses(self) -> tuple[torch.Tensor, torch.Tensor] | None: ...


def add_aux(total: torch.Tensor | None, model: _Mixed, weight: float) -> torch.Tensor | None:
    """`total` plus `weight` x the auxiliary losses (load balancing, z-loss) of `model`'s last forward
    pass, detached, where it is a mixture of experts (else `total`)."""
    losses = model.aux_losses()
    if losses is None:
        return total
    value = torch.stack(losses).detach() * weight
    return value if total is None else total + value


def step_values(
    reduce: Callable[[torch.Tensor], torch.Tensor], loss: torch.Tensor, aux: torch.Tensor | None, team: object
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A step's loss and auxiliary losses as every rank reports them (`reduce`: the step's one
    reduction over the ranks), the auxiliary ones carried in the same reduction; a parallel probe's
    team (`team`) reduces the loss alone, and reports no auxiliary losses (a probe logs none)."""
    if aux is None or team is not None:
        return reduce(loss), None
    values = reduce(torch.cat([loss.reshape(1), aux]))
    return values[0], values[1:]


def aux_fields(last: tuple[int, torch.Tensor] | None, step: int, probe: bool) -> dict[str, float]:
    """A step event's auxiliary losses: those of mainline step `step`, where they are the newest."""
    if probe or last is None or last[0] != step:
        return {}
    return dict(zip(("balance", "z_loss"), last[1].tolist(), strict=True))
