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

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import nn
from torch.optim import Optimizer

from lagdsl.lang.operator_args import DuplicateArgs, UpcycleArgs
from lagdsl.model.config import GPTConfig, Mixture
from lagdsl.model.gpt import GPT, INIT_STD
from lagdsl.model.layers.moe import MoE
from lagdsl.ops.core import Carry, Grown, GrowthError, GrowthSpec, add_noise_, rebuild_optimizer

__all__ = ["duplicate", "upcycle"]  # (`PlannedExperts` and `grow_experts` are here too, for plugins)


#: (block index, a getter of the old block's MLP tensors whole by name in the MLP, the generator)
#: -> the new MLP's tensors whole, one at a time, by name in the MLP (those it keeps as they are,
#: the same tensors with their optimizer state, are not among them). It lets each old tensor go
#: before it gets the next, so a sharded model gathers one tensor at a time.
GrowBlock = Callable[[int, Callable[[str], torch.Tensor], torch.Generator], Iterator[tuple[str, torch.Tensor]]]
#: block index -> how each of the new MLP's tensors' optimizer state moves, by the grown model's names
#: (a moment transform of the old tensor's whole, valid once the block grew; None: it starts with none)
BlockCarries = Callable[[int], dict[str, "Carry | None"]]


@dataclass(frozen=True)
class ExpertsPlan:
    """An experts growth: the grown model's config, each block's growth, computed from whole tensors
    with the generator's draws in block order (so that one process and N ranks, each computing a
    block's tensors whole and keeping its rows, grow the same values), and how the optimizer state
    moves; a block's MLP tensors that no carry names are kept as they are (Qwen2-MoE's shared expert)."""

    config: GPTConfig
    grow_block: GrowBlock
    carries: BlockCarries


class PlannedExperts:
    """An experts operator given by its plan: `plan(config, spec)`. Called as an operator it grows a
    whole model; a sharded one grows a block's MLP at a time (`lagdsl.runtime.distributed.moves`)."""

    def __init__(self, plan: Callable[[GPTConfig, GrowthSpec], ExpertsPlan], doc: str) -> None:
        self.plan, self.__doc__ = plan, doc

    def __call__(self, model: GPT, optimizer: Optimizer | None, spec: GrowthSpec, generator: torch.Generator) -> Grown:
        return grow_experts(model, optimizer, self.plan(model.config, spec), generator)


def grow_experts(model: GPT, optimizer: Optimizer | None, plan: ExpertsPlan, generator: torch.Generator) -> Grown:
    """The model with each mixture block's MLP grown by `plan` (whole tensors); everything else
    kept, the MLPs of blocks the grown mixture leaves dense too."""
    config = plan.config
    device, dtype = model.embed.weight.device, model.embed.weight.dtype
    with torch.device("meta"):
        grown = GPT(config)
    grown.take_ends(model)
    mapping: dict[str, Carry | None] = {}
    for i in range(config.depth):
        old, new = model.block(i), grown.block(i)
        new.norm1, new.attn, new.norm2 = old.norm1, old.attn, old.norm2
        if not config.mixed(i):  # a block the mixture leaves dense keeps its MLP
            new.mlp = old.mlp
            continue
        mlp = new.mlp
        assert isinstance(mlp, MoE)
        mlp.to_empty(device=device)
        mlp.to(dtype)
        sources, params, grown_names = dict(old.mlp.named_parameters()), dict(mlp.named_parameters()), set()
        with torch.no_grad():
            for name, value in plan.grow_block(i, partial(_detached, sources), generator):
                params[name].copy_(value)
                grown_names.add(name)
        for module in {name.split(".")[0] for name in params if name not in grown_names}:  # kept: the same modules
            setattr(mlp, module, getattr(old.mlp, module))
        mapping.update(plan.carries(i))
    for name, _ in grown.named_parameters():
        if name not in mapping:
            mapping[name] = Carry(name, shared=True)
    return Grown(grown, rebuild_optimizer(optimizer, model, grown, mapping), mapping)


def _upcycle_plan(old: GPTConfig, spec: GrowthSpec) -> ExpertsPlan:
    args = UpcycleArgs(**spec.args)
    if old.moe is not None or old.mlp != "swiglu":
        raise GrowthError("`upcycle` turns a dense SwiGLU MLP into a mixture of experts")
    experts, granularity = spec.target, args.granularity
    built = args.mixture(experts, old.hidden, old.depth)  # as the checker sized it
    if isinstance(built, str):
        raise GrowthError(built)
    mixture = Mixture(**built.model_dump())
    scale = float(granularity) if args.renormalize else experts * granularity / args.top_k
    slicing = _Slicing(experts, granularity, scale)
    drawn: dict[int, list[torch.Tensor]] = {}  # each block's hidden units Drop-Upcycling drew again, by expert

    def grow_block(
        i: int, dense: Callable[[str], torch.Tensor], generator: torch.Generator
    ) -> Iterator[tuple[str, torch.Tensor]]:
        hidden = old.hidden // granularity
        units = [torch.randperm(hidden, generator=generator)[: round(args.drop * hidden)] for _ in range(experts)]
        drawn[i] = units if args.drop else []
        whole = dense("gate_up.weight")
        value = slicing.gate_up(whole, 0)
        for e, chosen in enumerate(drawn[i]):  # each expert's units' gate and up rows, from the dense ones' statistics
            for offset, part in zip((0, hidden), whole.float().chunk(2), strict=True):
                value[e, offset + chosen] = _like(part, (len(chosen), old.width), generator).to(value.dtype)
        for e in range(experts):
            add_noise_(value[e], args.noise, generator)
        del whole
        yield "gate_up", value
        whole = dense("down.weight")
        value = slicing.down(whole, 1)
        for e, chosen in enumerate(drawn[i]):  # and their down columns
            value[e][:, chosen] = _like(whole.float() * scale, (old.width, len(chosen)), generator).to(value.dtype)
        for e in range(experts):
            add_noise_(value[e], args.noise, generator)
        del whole
        yield "down", value
        copies = torch.zeros(experts // granularity, old.width)
        if args.router == "random":
            nn.init.normal_(copies, 0.0, INIT_STD, generator=generator)
        yield "router.weight", copies.repeat_interleave(granularity, dim=0)

    def carries(i: int) -> dict[str, Carry | None]:
        prefix = f"blocks.{i}.mlp."
        return {
            prefix + "gate_up": Carry(prefix + "gate_up.weight", slicing.moved("gate_up", lambda: drawn[i])),
            prefix + "down": Carry(prefix + "down.weight", slicing.moved("down", lambda: drawn[i])),
            prefix + "router.weight": None,
        }

    return ExpertsPlan(replace(old, moe=mixture), grow_block, carries)


def _duplicate_plan(old: GPTConfig, spec: GrowthSpec) -> ExpertsPlan:
    args = DuplicateArgs(**spec.args)
    if old.moe is None or spec.target % old.moe.experts:
        raise GrowthError("`duplicate` copies each expert of a mixture a whole number of times")
    times = spec.target // old.moe.experts
    config = replace(old, moe=replace(old.moe, experts=spec.target, top_k=old.moe.top_k * times))

    def repeat(tensor: torch.Tensor, power: int = 0) -> torch.Tensor:
        return tensor.repeat_interleave(times, dim=0)

    routed = ("gate_up", "down", "router.weight")

    def grow_block(
        i: int, source: Callable[[str], torch.Tensor], generator: torch.Generator
    ) -> Iterator[tuple[str, torch.Tensor]]:
        for name in routed:
            value = repeat(source(name))
            if name != "router.weight":
                for e in range(spec.target):
                    add_noise_(value[e], args.noise, generator)
            yield name, value

    def carries(i: int) -> dict[str, Carry | None]:
        return {f"blocks.{i}.mlp.{name}": Carry(f"blocks.{i}.mlp.{name}", repeat) for name in routed}

    return ExpertsPlan(config, grow_block, carries)


upcycle = PlannedExperts(
    _upcycle_plan,
    "Each block's dense MLP a mixture of `spec.target` experts (the module's docstring); with `every=N` only every "
    "N-th block's (1, 3, ... for N = 2), the others kept dense.",
)
duplicate = PlannedExperts(
    _duplicate_plan,
    """Every expert of a mixture copied n = target / E times (its copies side by side, with its
    router row), top-k multiplied by n: each copy's probability is 1/n of the expert's, the n copies
    are chosen together, and their weights add up to the expert's, so the model computes what it
    did (with `noise`, each copy changed apart).""",
)


def _detached(tensors: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    return tensors[name].detach()


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

    def moved(self, which: str, drawn: Callable[[], list[torch.Tensor]]) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """The transform of an optimizer moment of the dense `which` onto the experts' (the hidden
        units Drop-Upcycling drew again in each expert, which `drawn()` gives once the block grew,
        at zero)."""

        def transform(tensor: torch.Tensor, power: int) -> torch.Tensor:
            if which == "gate_up":
                moved = self.gate_up(tensor, power)
                hidden = moved.shape[1] // 2
                for e, units in enumerate(drawn()):
                    moved[e, units] = 0
                    moved[e, hidden + units] = 0
                return moved
            moved = self.down(tensor, power)
            for e, units in enumerate(drawn()):
                moved[e][:, units] = 0
            return moved

        return transform


def _like(dense: torch.Tensor, shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """Values of `shape` drawn from a normal with `dense`'s mean and standard deviation (Drop-Upcycling)."""
    return torch.randn(shape, generator=generator) * dense.std().item() + dense.mean().item()
