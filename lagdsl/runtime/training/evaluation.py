"""Scoring a model without training it: the validation loss, and a probe's loss on one training
batch (`probe 0 steps`). Under several ranks each rank reads its share of the batches (a parallel
probe's team's ranks: theirs) and the mean is taken over the ranks."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F

from lagdsl.artifacts import EvalEvent
from lagdsl.model.gpt import GPT
from lagdsl.model.layers.moe import load_shares
from lagdsl.runtime.data.batches import Batches
from lagdsl.runtime.distributed import world as dist

#: positions A .. B - 1 of each sequence, whose loss alone is scored (None: every position)
Within = tuple[int, int] | None


class Evaluator:
    """The validation loss (the schedule's `eval` batches unless told) and single-batch losses."""

    def __init__(
        self, batches: Batches, device: torch.device, autocast: Callable[[], AbstractContextManager[object]],
        world: dist.World, eval_batches: int,
    ) -> None:  # fmt: skip
        self.batches, self.device, self.autocast, self.world = batches, device, autocast, world
        self.eval_batches = eval_batches
        #: the last evaluation's expert load of a mixture of experts: each block's share of the
        #: (token, slot) assignments per expert, over every rank's batches (a team's: its own rank's)
        self.expert_load: list[list[float]] | None = None

    @torch.no_grad()
    def evaluate(
        self,
        model: GPT,
        batches: int | None = None,
        team: dist.Team | None = None,
        positions: Within = None,
    ) -> float:
        """The mean validation loss over the first `batches` validation batches; with `positions`
        (A, B), of the tokens at positions A .. B - 1 alone (a probe's `at positions` rule)."""
        batches = self.eval_batches if batches is None else batches
        shares, weight = dist.shares(team)
        model.eval()
        total = torch.zeros((), device=self.device)
        counts: torch.Tensor | None = None  # a mixture's assignments per block and expert
        for index in range(batches):
            for shard in shares:
                inputs, targets = self.batches.val(index, shard, model.config.context)
                with self.autocast():
                    logits, loss = model(inputs, targets if positions is None else None)
                if positions is not None:
                    first, end = positions
                    chosen = logits[:, first:end].float()
                    loss = F.cross_entropy(chosen.reshape(-1, chosen.size(-1)), targets[:, first:end].reshape(-1))
                assert loss is not None
                total += loss.float() * weight
                if model.config.moe is not None:
                    layer_counts = torch.stack([r.counts for r in model.routing])
                    counts = layer_counts if counts is None else counts + layer_counts
        model.train()
        self.expert_load = None
        if counts is not None:
            counts = counts if team is not None else dist.all_sum(counts)
            self.expert_load = load_shares(counts)
        return self.mean_over_ranks(total / batches, team)

    @torch.no_grad()
    def first_batch_loss(self, model: GPT, step: int, team: dist.Team | None) -> float:
        """The loss on mainline step `step`'s first batch, without training (a `probe 0 steps` score)."""
        shares, weight = dist.shares(team)
        total = torch.zeros((), device=self.device)
        model.eval()
        with self.autocast():
            for shard in shares:
                inputs, targets = self.batches.train(step, 0, shard, model.config.context)
                loss = model(inputs, targets)[1]
                assert loss is not None
                total += loss.float() * weight
        model.train()
        return self.mean_over_ranks(total, team)

    def event(self, step: int, stage: str, val_loss: float) -> EvalEvent:
        """The event of an evaluation at mainline `step` that gave `val_loss` (with its expert load)."""
        load = {"expert_load": self.expert_load} if self.expert_load is not None else {}
        return EvalEvent(step=step, stage=stage, val_loss=val_loss, batches=self.eval_batches, **load)

    def mean_over_ranks(self, local: torch.Tensor, team: dist.Team | None) -> float:
        """The mean over the ranks (of `team`: theirs) of what this rank computed on its shares."""
        return team.loss(local) if team is not None else float(dist.all_sum(local).item()) / self.world.size
