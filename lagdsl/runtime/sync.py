"""How a training step shares its gradients and its loss among ranks: one object per parallelism,
which the engine's step asks at four points (torchtitan's train loop keeps the same seams).

- `Alone`: one process. The model is called as it is; the loss is this process's.
- `Replicated`: DDP over every rank. Gradients are averaged by DDP's buckets after the last
  micro-step's backward (earlier ones accumulate locally, `no_sync`); the loss is averaged in the
  step's one all-reduce, which also carries the ranks' requests (`lagdsl.runtime.agreement`).
- `Sharded`: FSDP2 over every rank. Gradients are reduce-scattered after the last micro-step
  (earlier ones accumulate unsharded); the loss as under `Replicated`.
- `Teamed`: a parallel probe's team (`lagdsl.runtime.dist.Team`). Its ranks read all the shares of
  the global batch between them, weighted, sum their gradients and losses over the team, and
  agree with every other rank on the step's requests (all teams step together).

The step itself (`Engine.train_step`) is the same for all four:

    for each micro-step:  with sync.accumulating(last):  for each share: forward, sync.scaled, backward
    sync.gradients(model); clip; optimizer step; sync.loss(mean)
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import cast

import torch
from torch.distributed.fsdp import FSDPModule
from torch.nn.parallel import DistributedDataParallel

from lagdsl.runtime.data import Shard
from lagdsl.runtime.dist import Team

#: The ranks' agreement on a step: the mean of their losses, with their requests agreed on.
Agree = Callable[[torch.Tensor], torch.Tensor]


class Alone:
    """One process: nothing to share."""

    #: the shares of the global batch this rank reads (None: its own), and each one's weight
    shares: tuple[Shard | None, ...] = (None,)
    weight = 1.0

    def accumulating(self, last: bool) -> AbstractContextManager[object]:
        """The context of a micro-step's backward passes (`last`: the step's last micro-step)."""
        return nullcontext()

    def scaled(self, loss: torch.Tensor, accumulate: int) -> torch.Tensor:
        """What a share's backward pass starts from: its loss's part of the step's mean."""
        return loss / accumulate

    def gradients(self, model: torch.nn.Module) -> None:
        """After the backward passes: gradients of the mean over the global batch."""

    def loss(self, mean: torch.Tensor) -> torch.Tensor:
        """The step's loss as every rank reports it, from this rank's mean."""
        return mean


class Replicated(Alone):
    """DDP: DDP's buckets average the gradients once, after the last micro-step."""

    def __init__(self, ddp: DistributedDataParallel, agree: Agree) -> None:
        self.ddp, self.agree = ddp, agree

    def accumulating(self, last: bool) -> AbstractContextManager[object]:
        return nullcontext() if last else cast(AbstractContextManager[object], self.ddp.no_sync())

    def loss(self, mean: torch.Tensor) -> torch.Tensor:
        return self.agree(mean)


class Sharded(Alone):
    """FSDP2: gradients reduce-scattered once, after the last micro-step."""

    def __init__(self, model: torch.nn.Module, agree: Agree) -> None:
        self.model, self.agree = cast(FSDPModule, model), agree

    def accumulating(self, last: bool) -> AbstractContextManager[object]:
        self.model.set_requires_gradient_sync(last)
        return nullcontext()

    def loss(self, mean: torch.Tensor) -> torch.Tensor:
        return self.agree(mean)


class Teamed(Alone):
    """A parallel probe's team: its ranks read every share between them and sum over the team."""

    def __init__(self, team: Team, agree: Agree) -> None:
        self.team, self.agree = team, agree
        self.shares, self.weight = team.shards, team.weight

    def scaled(self, loss: torch.Tensor, accumulate: int) -> torch.Tensor:
        return loss * (self.weight / accumulate)

    def gradients(self, model: torch.nn.Module) -> None:
        self.team.sum_gradients(model)

    def loss(self, mean: torch.Tensor) -> torch.Tensor:
        value = torch.tensor(self.team.loss(mean))
        self.agree(torch.zeros((), device=mean.device))  # every team steps together: requests agreed here too
        return value
