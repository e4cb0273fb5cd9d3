"""Experts operators: a dense MLP becomes a mixture of experts (`upcycle`), a mixture's experts are
copied (`duplicate`). The language's `grow experts to E with OP`; the catalogue (`lagdsl ops`)
says which keep the function.

`upcycle` with E experts and granularity G (sparse upcycling at G = 1; NVIDIA's granular
upcycling, arXiv 2410.07524, at G > 1): each dense SwiGLU MLP of hidden size h is cut along its
hidden dimension into G slices of h / G, and expert e is slice e mod G of copy e // G (Megatron-LM's
order). The slices of one copy add up to the dense MLP, since its down projection is linear in the
hidden units. The router's rows are drawn for the E / G copies and repeated G times ("virtual
groups"): the slices of one copy always have the same probability, so a token's top-k (a multiple
of G) takes whole copies. What the chosen experts' weights add up to is undone on the down
projections:

- with renormalized top-k weights (they sum to 1, each copy's G slices share them equally), the
  mixture computes the dense MLP divided by G: the down projections are multiplied by G (1 for
  plain copies), and the grown model computes exactly what the dense one did, whatever the router;
- without renormalization, with a zero router, every weight is 1 / E and k / G whole copies are
  chosen: the down projections are multiplied by E G / k, exact while the router is zero (with a
  random router, approximately: the scale of Megatron-LM's `upcycling_utils.py`, which it spreads
  over the three projections as a cube root).

Drop-Upcycling (Nakamura et al., arXiv 2502.19261): in each expert a share `drop` of its hidden
units (a different random subset per expert) has its gate and up rows and its down column drawn
again from normals with the mean and standard deviation of the dense weights they replace.
`noise` adds Gaussian noise to each expert apart. Both break the copies' symmetry; neither keeps
the function.

The optimizer state moves with the weights: each expert's Adam moments are its slice of the dense
MLP's (scaled as its down projection is: the first moment by the scale, the second by its square),
the redrawn units' start at zero, the router starts with none, and every other parameter is kept,
the same tensor with its state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from lagdsl.lang.catalogue import DuplicateArgs, UpcycleArgs
from lagdsl.model.config import GPTConfig, Mixture
from lagdsl.model.gpt import GPT, INIT_STD
from lagdsl.model.layers.mlp import MLP
from lagdsl.model.layers.moe import MoE
from lagdsl.ops.core import Carry, Grown, GrowthError, GrowthSpec, add_noise_, rebuild_optimizer

__all__ = ["duplicate", "upcycle"]


def upcycle(model: GPT, optimizer: Optimizer | None, spec: GrowthSpec, generator: torch.Generator) -> Grown:
    """Every block's dense MLP a mixture of `spec.target` experts (see the module's docstring)."""
    args = UpcycleArgs(**spec.args)
    old = model.config
    if old.moe is not None or old.mlp != "swiglu":
        raise GrowthError("`upcycle` turns a dense SwiGLU MLP into a mixture of experts")
    experts, granularity = spec.target, args.granularity
    if experts % granularity or old.hidden % granularity or args.top_k % granularity:
        raise GrowthError(f"granularity {granularity} does not divide the experts, the MLP or top_k")
    mixture = Mixture(
        experts=experts, top_k=args.top_k, hidden=old.hidden // granularity, renormalize=args.renormalize,
        balance=args.balance, z_loss=args.z_loss,
    )  # fmt: skip
    scale = float(granularity) if args.renormalize else experts * granularity / args.top_k
    config = replace(old, moe=mixture)
    slicing = _Slicing(experts, granularity, scale)

    def build(i: int, dense: MLP, moe: MoE) -> dict[str, Carry | None]:
        prefix = f"blocks.{i}.mlp."
        gate_up, down = dense.gate_up.weight, dense.down.weight
        with torch.no_grad():
            moe.gate_up.copy_(slicing.gate_up(gate_up, 0))
            moe.down.copy_(slicing.down(down, 1))
            kept = _drop(moe, gate_up, down * scale, args.drop, generator) if args.drop else None
            for e in range(experts):
                add_noise_(moe.gate_up[e], args.noise, generator)
                add_noise_(moe.down[e], args.noise, generator)
            copies = torch.empty(experts // granularity, old.width)
            if args.router == "zero":
                copies.zero_()
            else:
                nn.init.normal_(copies, 0.0, INIT_STD, generator=generator)
            moe.router.weight.copy_(copies.repeat_interleave(granularity, dim=0))
        return {
            prefix + "gate_up": Carry(prefix + "gate_up.weight", slicing.moved("gate_up", kept)),
            prefix + "down": Carry(prefix + "down.weight", slicing.moved("down", kept)),
            prefix + "router.weight": None,
        }

    return _mixed(model, optimizer, config, build)


def duplicate(model: GPT, optimizer: Optimizer | None, spec: GrowthSpec, generator: torch.Generator) -> Grown:
    """Every expert of a mixture copied n = target / E times (its copies side by side, with its
    router row), top-k multiplied by n: each copy's probability is 1/n of the expert's, the n copies
    are chosen together, and their weights add up to the expert's, so the model computes what it
    did (with `noise`, each copy changed apart)."""
    args = DuplicateArgs(**spec.args)
    old = model.config
    if old.moe is None or spec.target % old.moe.experts:
        raise GrowthError("`duplicate` copies each expert of a mixture a whole number of times")
    times = spec.target // old.moe.experts
    config = replace(old, moe=replace(old.moe, experts=spec.target, top_k=old.moe.top_k * times))

    def repeat(tensor: torch.Tensor, power: int = 0) -> torch.Tensor:
        return tensor.repeat_interleave(times, dim=0)

    def build(i: int, source: MoE, moe: MoE) -> dict[str, Carry | None]:
        with torch.no_grad():
            moe.gate_up.copy_(repeat(source.gate_up))
            moe.down.copy_(repeat(source.down))
            moe.router.weight.copy_(repeat(source.router.weight))
            for e in range(spec.target):
                add_noise_(moe.gate_up[e], args.noise, generator)
                add_noise_(moe.down[e], args.noise, generator)
            if source.mixture.shared:
                moe.shared, moe.shared_gate = source.shared, source.shared_gate
        prefix = f"blocks.{i}.mlp."
        mapping: dict[str, Carry | None] = {
            prefix + name: Carry(prefix + name, repeat) for name in ("gate_up", "down", "router.weight")
        }
        return mapping

    return _mixed(model, optimizer, config, build)


Build = Callable[[int, Any, MoE], dict[str, "Carry | None"]]


def _mixed(model: GPT, optimizer: Optimizer | None, config: GPTConfig, build: Build) -> Grown:
    """The model with every block's MLP replaced by a mixture of `config` that `build(i, old MLP,
    new mixture)` fills, returning the mixture's parameters' carries; everything else is kept."""
    device, dtype = model.embed.weight.device, model.embed.weight.dtype
    with torch.device("meta"):
        grown = GPT(config)
    grown.embed, grown.norm, grown.lm_head = model.embed, model.norm, model.lm_head  # the tie stays
    grown.rotary_cos, grown.rotary_sin = model.rotary_cos, model.rotary_sin
    mapping: dict[str, Carry | None] = {}
    for i in range(config.depth):
        old, new = model.block(i), grown.block(i)
        new.norm1, new.attn, new.norm2 = old.norm1, old.attn, old.norm2
        mlp = new.mlp
        assert isinstance(mlp, MoE)
        mlp.to_empty(device=device)
        mlp.to(dtype)
        mapping.update(build(i, old.mlp, mlp))
    for name, _ in grown.named_parameters():
        if name not in mapping:
            mapping[name] = Carry(name, shared=True)
    return Grown(grown, rebuild_optimizer(optimizer, model, grown, mapping), mapping)


class _Slicing:
    """A dense MLP's tensors cut into the experts of granular upcycling: expert e is slice e mod G of
    copy e // G; the down projection multiplied by `scale`."""

    def __init__(self, experts: int, granularity: int, scale: float) -> None:
        self.experts, self.granularity, self.scale = experts, granularity, scale

    def gate_up(self, dense: torch.Tensor, power: int) -> torch.Tensor:
        """gate_up (2h x w: gate rows, then up rows) -> E x 2h/G x w."""
        gate, up = dense.chunk(2, dim=0)
        slices = [
            torch.cat(pair) for pair in zip(gate.chunk(self.granularity), up.chunk(self.granularity), strict=True)
        ]
        return torch.stack([slices[e % self.granularity] for e in range(self.experts)])

    def down(self, dense: torch.Tensor, power: int) -> torch.Tensor:
        """down (w x h) -> E x w x h/G, times the scale to the power `power` (1 for the weights and
        first moments, 2 for second moments)."""
        slices = dense.chunk(self.granularity, dim=1)
        stacked = torch.stack([slices[e % self.granularity] for e in range(self.experts)])
        return stacked * self.scale**power

    def moved(self, which: str, kept: dict[str, torch.Tensor] | None) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """The transform of an optimizer moment of the dense `which` onto the experts' (redrawn
        entries at zero)."""

        def transform(tensor: torch.Tensor, power: int) -> torch.Tensor:
            moved = self.gate_up(tensor, power) if which == "gate_up" else self.down(tensor, power)
            return moved * kept[which].to(moved.dtype) if kept is not None else moved

        return transform


def _drop(
    moe: MoE, gate_up: torch.Tensor, down: torch.Tensor, share: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Drop-Upcycling in place on `moe`'s experts: a share of each expert's hidden units drawn
    again from the statistics of the dense tensors; the masks of the entries kept."""
    experts, rows, _ = moe.gate_up.shape
    hidden = rows // 2
    count = round(share * hidden)
    kept_gate_up = torch.ones(moe.gate_up.shape, dtype=torch.bool)
    kept_down = torch.ones(moe.down.shape, dtype=torch.bool)
    gate, up = gate_up.float().chunk(2, dim=0)
    stats = [(t.mean().item(), t.std().item()) for t in (gate, up, down.float())]
    for e in range(experts):
        units = torch.randperm(hidden, generator=generator)[:count]
        for offset, (mean, std) in zip((0, hidden), stats[:2], strict=True):
            drawn = torch.randn(count, moe.gate_up.shape[2], generator=generator) * std + mean
            moe.gate_up[e, offset + units] = drawn.to(moe.gate_up.device, moe.gate_up.dtype)
            kept_gate_up[e, offset + units] = False
        mean, std = stats[2]
        drawn = torch.randn(moe.down.shape[1], count, generator=generator) * std + mean
        moe.down[e][:, units] = drawn.to(moe.down.device, moe.down.dtype)
        kept_down[e][:, units] = False
    return {"gate_up": kept_gate_up.to(moe.gate_up.device), "down": kept_down.to(moe.down.device)}
