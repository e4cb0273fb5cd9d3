"""How a training step shares its gradients and its loss among ranks: one object per parallelism,
which the engine's step asks at four points (torchtitan's train loop keeps the same seams).

- `Alone`: one process. The model is called as it is; the loss is this process's.
- `Replicated`: DDP over every rank. Gradients are averaged by DDP's buckets after the last
  micro-step's backward (earlier ones accumulate locally, `no_sync`); the loss is averaged in the
  step's one all-reduce, which also carries the ranks' requests (`lagdsl.runtime.training.agreement`).
- `Sharded`: FSDP2 over every rank. Gradients are reduce-scattered after the last micro-step
  (earlier ones accumulate unsharded); the loss as under `Replicated`.
- `Teamed`: a parallel probe's team (`lagdsl.runtime.distributed.world.Team`). Its ranks read all the shares of
  the global batch between them, weighted, sum their gradients and losses over the team, and
  agree with every other rank on the step's requests (all teams step together).

`Wrappers` builds, once per model object, what a step calls (DDP's wrapper, the compiled model)
and the sharing that goes with it. The step itself (`Engine.train_step`) is the same for all four:

    for each micro-step:  with sync.accumulating(last):  for each share: forward, sync.scaled, backward
    sync.gradients(model); clip; optimizer step; sync.loss(mean)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import cast

import torch
from torch.distributed.fsdp import FSDPModule
from torch.nn.parallel import DistributedDataParallel

from lagdsl.lang.schedule import Schedule
from lagdsl.model.gpt import GPT
from lagdsl.runtime.data.batches import Shard
from lagdsl.runtime.distributed.world import Team, World
from lagdsl.runtime.state.train_state import Recipe

#: The ranks' agreement on a step: the mean of their losses, with their requests agreed on.
Agree = Callable[[torch.Tensor], torch.Tensor]

#: What a training step calls: the model, or its DDP or compiled wrapper.
Forward = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor | None]]


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


class Wrappers:
    """What a training step of a model calls, and how it shares gradients and loss, built once per
    model object (a grown model, a new object, is wrapped anew; `clear` drops the wrapper, which
    would keep its model alive). Under several ranks the model in `DistributedDataParallel` or,
    sharded, as FSDP shards it; with a `team` (a parallel probe's) the team's own sharing; under
    `compile on` compiled; under `activations recompute` recomputing. Checkpoints and growth use
    the plain module."""

    def __init__(self, schedule: Schedule, recipe: Recipe, world: World, agree: Agree) -> None:
        self.schedule, self.recipe, self.world, self.agree = schedule, recipe, world, agree
        self._wrapped: tuple[GPT, Forward, Alone] | None = None
        self.seconds = 0.0  # wall time spent wrapping

    def clear(self) -> None:
        self._wrapped = None

    def of(self, model: GPT, team: Team | None = None) -> tuple[Forward, Alone]:
        if self._wrapped is None or self._wrapped[0] is not model:
            started = time.perf_counter()
            model.recompute = self.schedule.activations == "recompute"
            forward: Forward = model
            shared = Alone()
            if self.world.distributed and team is None:
                if self.recipe.sharded:
                    shared = Sharded(model, self.agree)
                else:
                    device = self.recipe.device.device
                    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
                    forward = cast(Forward, ddp)  # DDP calls the module with the same arguments
                    shared = Replicated(ddp, self.agree)
            if self.schedule.compile:
                forward = cast(Forward, torch.compile(forward))  # compile keeps the call's signature
            self._wrapped = (model, forward, shared)
            self.seconds += time.perf_counter() - started
        if team is not None:
            return self._wrapped[1], Teamed(team, self.agree)
        return self._wrapped[1], self._wrapped[2]
