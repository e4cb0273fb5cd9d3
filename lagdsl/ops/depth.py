"""Depth operators: add `b` layers to a model of `d` (the language's depth operators).

Every one is a layer plan (`lagdsl.lang.layers`, torch-free, which the checker reads too): for
each position of the grown stack, the old layer it is (kept, the same module), a copy of an old
layer, or a fresh layer. `grow_depth` carries out any such plan, so a plugin can write a new depth
operator as a plan alone.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.optim import Optimizer

from lagdsl.lang import layers
from lagdsl.lang.layers import Layer, copies, keep  # noqa: F401 (for plugins, which build plans)
from lagdsl.model.gpt import GPT, Block, init_block
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
    old_config = model.config
    config = old_config.grown(depth=len(plan))
    device, dtype = model.embed.weight.device, model.embed.weight.dtype
    with torch.device("meta"):
        grown = GPT(config)
    grown.embed, grown.norm, grown.lm_head = model.embed, model.norm, model.lm_head  # the tie stays
    grown.rotary_cos, grown.rotary_sin = model.rotary_cos, model.rotary_sin
    residual_std = 0.02 / (2 * config.depth) ** 0.5
    mapping: dict[str, Carry | None] = {"embed.weight": Carry("embed.weight", shared=True)}
    mapping["norm.weight"] = Carry("norm.weight", shared=True)
    if not config.tie:
        mapping["lm_head.weight"] = Carry("lm_head.weight", shared=True)
    blocks: dict[str, nn.Module] = {}
    for i, layer in enumerate(plan):
        if layer.source is None:
            block = Block(config)
            init_block(block, residual_std, generator)
            if zero_residual:
                with torch.no_grad():
                    for linear in block.residual_outputs():
                        linear.weight.zero_()
            blocks[str(i)] = block.to(device=device, dtype=dtype)
            for name, _ in block.named_parameters():
                mapping[f"blocks.{i}.{name}"] = None
            continue
        source = model.block(layer.source)
        zeroed: set[int] = set()
        if layer.copy:
            block = copy.deepcopy(source)
            with torch.no_grad():
                for param in block.parameters():
                    add_noise_(param, noise, generator)
                if zero_copies:
                    for linear in block.residual_outputs():
                        linear.weight.zero_()
                        zeroed.add(id(linear.weight))
        else:
            block = source
        blocks[str(i)] = block
        for name, param in block.named_parameters():
            carry = Carry(f"blocks.{layer.source}.{name}", shared=not layer.copy)
            mapping[f"blocks.{i}.{name}"] = None if id(param) in zeroed else carry
    grown.blocks = nn.ModuleDict(blocks)
    return Grown(grown, rebuild_optimizer(optimizer, model, grown, mapping), mapping)


def _added(model: GPT, spec: GrowthSpec) -> tuple[int, int]:
    d = model.config.depth
    b = spec.target - d
    if b <= 0:
        raise ValueError(f"depth {spec.target} does not grow a model of depth {d}")
    return d, b


def _copy_check(d: int, b: int, what: str) -> None:
    if b > d:
        raise ValueError(f"{what} copies {b} layers and the model has {d}")


def copy_top(model: GPT, optimizer: Optimizer | None, spec: GrowthSpec, generator: torch.Generator) -> Grown:
    """Copies of the top b layers, placed on top (gradual stacking)."""
    d, b = _added(model, spec)
    _copy_check(d, b, "copy_top")
    return grow_depth(model, optimizer, layers.copy_top(d, b), generator, noise=_noise(spec))


def copy_bottom(model: GPT, optimizer: Optimizer | None, spec: GrowthSpec, generator: torch.Generator) -> Grown:
    """Copies of the bottom b layers, placed on top."""
    d, b = _added(model, spec)
    _copy_check(d, b, "copy_bottom")
    return grow_depth(model, optimizer, layers.copy_bottom(d, b), generator, noise=_noise(spec))


def midas(model: GPT, optimizer: Optimizer | None, spec: GrowthSpec, generator: torch.Generator) -> Grown:
    """A copy of the middle block of b layers (starting at layer (d - b) // 2), inserted right after it."""
    d, b = _added(model, spec)
    _copy_check(d, b, "midas")
    return grow_depth(model, optimizer, layers.midas(d, b), generator, noise=_noise(spec))


def stack(model: GPT, optimizer: Optimizer | None, spec: GrowthSpec, generator: torch.Generator) -> Grown:
    """The whole stack repeated on top, in order (b a multiple of d)."""
    d, b = _added(model, spec)
    if b % d:
        raise ValueError(f"stack adds a multiple of {d} layers, not {b}")
    return grow_depth(model, optimizer, layers.stack(d, b), generator, noise=_noise(spec))


def interleave(model: GPT, optimizer: Optimizer | None, spec: GrowthSpec, generator: torch.Generator) -> Grown:
    """A copy of each of b evenly spaced layers, right after its source."""
    d, b = _added(model, spec)
    _copy_check(d, b, "interleave")
    return grow_depth(model, optimizer, layers.interleave(d, b), generator, noise=_noise(spec))


def random(model: GPT, optimizer: Optimizer | None, spec: GrowthSpec, generator: torch.Generator) -> Grown:
    """Freshly initialized layers on top."""
    d, b = _added(model, spec)
    return grow_depth(model, optimizer, layers.on_top(d, b), generator)


def identity(model: GPT, optimizer: Optimizer | None, spec: GrowthSpec, generator: torch.Generator) -> Grown:
    """Fresh layers on top whose residual output projections are zero: the function is unchanged."""
    d, b = _added(model, spec)
    return grow_depth(model, optimizer, layers.on_top(d, b), generator, zero_residual=True)


def _noise(spec: GrowthSpec) -> float:
    return spec.number("noise")


def layers_(model: GPT, optimizer: Optimizer | None, spec: GrowthSpec, generator: torch.Generator) -> Grown:
    """The listed half-open ranges of the current layers, in order (mergekit's passthrough slices)."""
    ranges = spec.args.get("ranges")
    assert isinstance(ranges, tuple | list)
    pairs = [(int(a), int(b)) for a, b in ranges]
    d = model.config.depth
    if any(b > d for _, b in pairs) or sum(b - a for a, b in pairs) != spec.target:
        raise ValueError(f"the ranges {pairs} do not give {spec.target} layers of a model of {d}")
    return grow_depth(model, optimizer, layers.slices(pairs), generator)


def llama_pro(model: GPT, optimizer: Optimizer | None, spec: GrowthSpec, generator: torch.Generator) -> Grown:
    """After every k-th layer (k = d / b) a copy of it whose residual output projections are zero
    (LLaMA Pro's block expansion): the function is unchanged, and the copies train from their
    source's attention and MLP inputs."""
    d, b = _added(model, spec)
    if d % b:
        raise ValueError(f"llama_pro adds a divisor of {d} layers, not {b}")
    return grow_depth(model, optimizer, layers.llama_pro(d, b), generator, zero_copies=True)
