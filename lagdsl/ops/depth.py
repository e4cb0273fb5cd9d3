"""Depth operators: add `b` layers to a model of `d` (the language's depth operators).

Every one is a layer plan (`lagdsl.lang.layers`, torch-free, which the checker reads too): for
each position of the grown stack, the old layer it is (kept, the same module), a copy of an old
layer, or a fresh layer. `grow_depth` carries out any such plan, so a plugin can write a new depth
operator as a plan alone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import Optimizer

from lagdsl.lang import layers
from lagdsl.lang.layers import Layer, copies, keep  # noqa: F401 (for plugins, which build plans)
from lagdsl.model.config import GPTConfig
from lagdsl.model.gpt import GPT, INIT_STD, Block, init_block
from lagdsl.ops.core import Carry, Grown, GrowthSpec, add_noise_, rebuild_optimizer

#: the operators (`Layer`, `keep`, `copies` and `grow_depth` are here too, for plugins' plans)
__all__ = ["copy_bottom", "copy_top", "identity", "interleave", "layers_", "llama_pro", "midas", "random", "stack"]


def grow_depth(
    model: GPT,
    optimizer: torch.optim.Optimizer | None,
    plan: list[Layer],  # runs, or one Layer per position
    generator: torch.Generator,
    *,
    noise: float = 0.0,
    zero_residual: bool = False,
    zero_copies: bool = False,
) -> Grown:
    """The model with the layers `plan` lists, in order, and its optimizer with state moved.

    Kept layers are the same modules (their parameters and optimizer state are shared, not
    copied). Copies are deep copies of their source with `noise` added. Fresh layers are
    initialized from `generator` for the grown depth; with `zero_residual` their projections
    into the residual stream start at zero, so each fresh block computes the identity. With
    `zero_copies` the copies' residual output projections are zero too (LLaMA Pro), and those
    start with no optimizer state.
    """
    plan = layers.positions(plan)
    config = model.config.restacked(plan)
    device, dtype = model.embed.weight.device, model.embed.weight.dtype
    with torch.device("meta"):
        grown = GPT(config)
    grown.take_ends(model)
    blocks: dict[str, nn.Module] = {}
    for i, layer in enumerate(plan):
        if layer.source is None:
            blocks[str(i)] = fresh_block(config, generator, zero_residual, i).to(device=device, dtype=dtype)
            continue
        block = source = model.block(layer.source)
        if layer.copy:
            block = copy.deepcopy(source)
            with torch.no_grad():
                for param in block.parameters():
                    add_noise_(param, noise, generator)
                if zero_copies:
                    for weight in block.residual_outputs():
                        weight.zero_()
        blocks[str(i)] = block
    grown.blocks = nn.ModuleDict(blocks)
    mapping = depth_mapping(config, plan, zero_copies)
    return Grown(grown, rebuild_optimizer(optimizer, model, grown, mapping), mapping)


def depth_mapping(config: GPTConfig, plan: list[Layer], zero_copies: bool = False) -> dict[str, Carry | None]:
    """Where each parameter of the model `plan` (one `Layer` per position) builds comes from: the
    embedding, final norm and head are kept; a kept layer's parameters are its source's (shared),
    a copy's are copies, a fresh layer's and (`zero_copies`) a copy's zeroed projections are new."""
    with torch.device("meta"):
        kept = GPT(config).end_names()
    mapping: dict[str, Carry | None] = {name: Carry(name, shared=True) for name in kept}
    kinds: dict[bool, Block] = {}  # a block of each kind (a mixture's dense blocks are another)
    for i, layer in enumerate(plan):
        if config.mixed(i) not in kinds:
            with torch.device("meta"):
                kinds[config.mixed(i)] = Block(config, i)
        block = kinds[config.mixed(i)]
        zeroed = residual_names(block) if zero_copies else set()
        for name, _ in block.named_parameters():
            new = layer.source is None or (layer.copy and name in zeroed)
            source = f"blocks.{layer.source}.{name}"
            mapping[f"blocks.{i}.{name}"] = None if new else Carry(source, shared=not layer.copy)
    return mapping


@dataclass(frozen=True)
class DepthPlan:
    """What a depth operator builds: the layer plan, and how its copies and fresh layers start
    (`grow_depth`'s options). One plan is carried out by `grow_depth` on a whole model, and by
    `lagdsl.runtime.distributed.moves` on a sharded one, without gathering it."""

    layers: list[Layer]
    noise: float = 0.0
    zero_residual: bool = False
    zero_copies: bool = False


class PlannedDepth:
    """A depth operator given by its plan: `plan(d, spec)` for a model of depth d (raising
    ValueError where the growth cannot be done). Called as an operator, it carries the plan out
    with `grow_depth`; a plugin's depth operator written this way grows sharded models too."""

    def __init__(self, plan: Callable[[int, GrowthSpec], DepthPlan], doc: str) -> None:
        self.plan, self.__doc__ = plan, doc

    def __call__(self, model: GPT, optimizer: Optimizer | None, spec: GrowthSpec, generator: torch.Generator) -> Grown:
        plan = self.plan(model.config.depth, spec)
        return grow_depth(
            model, optimizer, plan.layers, generator,
            noise=plan.noise, zero_residual=plan.zero_residual, zero_copies=plan.zero_copies,
        )  # fmt: skip


def fresh_block(config: GPTConfig, generator: torch.Generator, zero_residual: bool = False, index: int = 0) -> Block:
    """A fresh layer `index` of a model grown to `config` (fp32, on the CPU), initialized from
    `generator`; with `zero_residual` its projections into the residual stream are zero."""
    block = Block(config, index)
    init_block(block, INIT_STD / (2 * config.depth) ** 0.5, generator)
    if zero_residual:
        with torch.no_grad():
            for weight in block.residual_outputs():
                weight.zero_()
    return block


def residual_names(block: Block) -> set[str]:
    """The names (in the block) of the weights of its projections into the residual stream."""
    outputs = {id(weight) for weight in block.residual_outputs()}
    return {name for name, param in block.named_parameters() if id(param) in outputs}


def _added(d: int, spec: GrowthSpec) -> int:
    b = spec.target - d
    if b <= 0:
        raise ValueError(f"depth {spec.target} does not grow a model of depth {d}")
    return b


def _copying(what: str, layout: Callable[[int, int], list[Layer]]) -> Callable[[int, GrowthSpec], DepthPlan]:
    """The plan of an operator that copies b of the d layers (`noise` on the copies)."""

    def plan(d: int, spec: GrowthSpec) -> DepthPlan:
        b = _added(d, spec)
        if b > d:
            raise ValueError(f"{what} copies {b} layers and the model has {d}")
        return DepthPlan(layout(d, b), noise=spec.number("noise"))

    return plan


def _stack(d: int, spec: GrowthSpec) -> DepthPlan:
    b = _added(d, spec)
    if b % d:
        raise ValueError(f"stack adds a multiple of {d} layers, not {b}")
    return DepthPlan(layers.stack(d, b), noise=spec.number("noise"))


def _random(d: int, spec: GrowthSpec) -> DepthPlan:
    return DepthPlan(layers.on_top(d, _added(d, spec)))


def _identity(d: int, spec: GrowthSpec) -> DepthPlan:
    return DepthPlan(layers.on_top(d, _added(d, spec)), zero_residual=True)


def _layers(d: int, spec: GrowthSpec) -> DepthPlan:
    ranges = spec.args.get("ranges")
    assert isinstance(ranges, tuple | list)
    pairs = [(int(a), int(b)) for a, b in ranges]
    if any(b > d for _, b in pairs) or sum(b - a for a, b in pairs) != spec.target:
        raise ValueError(f"the ranges {pairs} do not give {spec.target} layers of a model of {d}")
    return DepthPlan(layers.slices(pairs))


def _llama_pro(d: int, spec: GrowthSpec) -> DepthPlan:
    b = _added(d, spec)
    if d % b:
        raise ValueError(f"llama_pro adds a divisor of {d} layers, not {b}")
    return DepthPlan(layers.llama_pro(d, b), zero_copies=True)


copy_top = PlannedDepth(
    _copying("copy_top", layers.copy_top), "Copies of the top b layers, placed on top (gradual stacking)."
)
copy_bottom = PlannedDepth(_copying("copy_bottom", layers.copy_bottom), "Copies of the bottom b layers, placed on top.")
midas = PlannedDepth(
    _copying("midas", layers.midas),
    "A copy of the middle block of b layers (starting at layer (d - b) // 2), inserted right after it.",
)
stack = PlannedDepth(_stack, "The whole stack repeated on top, in order (b a multiple of d).")
interleave = PlannedDepth(
    _copying("interleave", layers.interleave), "A copy of each of b evenly spaced layers, right after its source."
)
random = PlannedDepth(_random, "Freshly initialized layers on top.")
identity = PlannedDepth(
    _identity, "Fresh layers on top whose residual output projections are zero: the function is unchanged."
)
layers_ = PlannedDepth(
    _layers, "The listed half-open ranges of the current layers, in order (mergekit's passthrough slices)."
)
llama_pro = PlannedDepth(
    _llama_pro,
    "After every k-th layer (k = d / b) a copy of it whose residual output projections are zero (LLaMA Pro's block "
    "expansion): the function is unchanged, and the copies train from their source's attention and MLP inputs.",
)
