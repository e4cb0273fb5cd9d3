"""What every growth operator shares: the spec it is given, the mapping it returns, the optimizer
rebuilt around the grown model with its state moved, and the checks that run after each growth.

An operator is a function `(model, optimizer, spec, generator) -> Grown`. `Grown.mapping` says,
for each parameter of the grown model, where it came from: a `Carry` (an old parameter, and how
its values were moved) or None (new). The optimizer state moves by the same mapping:

- a parameter the operator keeps as it was (the same tensor) keeps its state as it was;
- a copy gets a copy of its source's state: Adam's moments, SGD's momentum buffer, and the step
  count (so Adam's bias correction continues where the source's was);
- a parameter whose values were moved and rescaled (width growth) gets its moments moved the same
  way, the first moment scaled as the weights are and the second by the square of that; entries
  that are new start at zero, and the parameter keeps its source's step count;
- a new parameter starts with no state (Adam's step count starts at 0 on its first update);
- with `reset_optimizer` every parameter starts with no state.

The model returned may share the parameters it did not change (the same tensors) with the model
given, and the optimizer state of those; the model and optimizer given are spent.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import cast

import torch

from lagdsl.lang.catalogue import Catalogue, default_catalogue
from lagdsl.lang.schedule import Dim
from lagdsl.model.gpt import GPT

#: How each optimizer-state entry scales with the weights it belongs to (power of the weights' scale).
MOMENT_POWERS = {"exp_avg": 1, "exp_avg_sq": 2, "max_exp_avg_sq": 2, "momentum_buffer": 1, "compensation": 1}


@dataclass(frozen=True)
class GrowthSpec:
    """What to grow: the operator (by name), its dimension, the target size, the arguments."""

    operator: str
    dim: Dim
    target: int
    args: Mapping[str, object] = field(default_factory=dict)

    def number(self, name: str, default: float = 0.0) -> float:
        """A numeric argument (the checker made sure it is one)."""
        value = self.args.get(name, default)
        assert isinstance(value, int | float)
        return float(value)


@dataclass(frozen=True)
class Carry:
    """Where a grown parameter's values came from.

    `transform(tensor, power)` moves a tensor shaped like the source to the new shape, scaling by
    the weights' scale raised to `power` (1 for first moments, 2 for second moments). `shared`:
    the new parameter is the source tensor itself, so its state needs no moving at all.
    """

    source: str
    transform: Callable[[torch.Tensor, int], torch.Tensor] | None = None
    shared: bool = False

    def move(self, tensor: torch.Tensor, power: int) -> torch.Tensor:
        if self.shared:
            return tensor
        if self.transform is None:
            return tensor.clone()
        return self.transform(tensor, power)


@dataclass
class Grown:
    model: GPT
    optimizer: torch.optim.Optimizer | None
    mapping: dict[str, Carry | None]


Operator = Callable[[GPT, "torch.optim.Optimizer | None", GrowthSpec, torch.Generator], Grown]


# ------------------------------------------------------------------------------ the optimizer


def rebuild_optimizer(
    old: torch.optim.Optimizer | None,
    old_model: GPT,
    new_model: GPT,
    mapping: Mapping[str, Carry | None],
    *,
    reset: bool = False,
) -> torch.optim.Optimizer | None:
    """An optimizer of the old one's kind and settings over the new model, its state moved."""
    if old is None:
        return None
    decay = next((g["weight_decay"] for g in old.param_groups if g["weight_decay"]), 0.0)
    groups = new_model.param_groups(decay)
    for group in groups:  # keep each group's current settings (lr, betas, ...) where they exist
        template = next((g for g in old.param_groups if (g["weight_decay"] > 0) == (group["weight_decay"] > 0)), None)
        if template is not None:
            group.update({k: v for k, v in template.items() if k not in ("params", "weight_decay", "lr_scale")})
    accepted = inspect.signature(type(old)).parameters
    new = type(old)(groups, **{k: v for k, v in old.defaults.items() if k in accepted})
    if reset:
        return new
    old_params = dict(old_model.named_parameters())
    for name, param in new_model.named_parameters():
        carry = mapping.get(name)
        if carry is None:
            continue
        state = old.state.get(old_params[carry.source])
        if not state:
            continue
        new.state[param] = moved_state(state, carry)
    return new


def moved_state(state: Mapping[str, object], carry: Carry) -> dict[str, object]:
    """A parameter's optimizer state moved as `carry` moved its values (the step count copied)."""
    out: dict[str, object] = {}
    for key, value in state.items():
        if key in MOMENT_POWERS:
            assert isinstance(value, torch.Tensor)
            out[key] = carry.move(value, MOMENT_POWERS[key])
        else:
            out[key] = value.clone() if isinstance(value, torch.Tensor) and not carry.shared else value
    return out


# ------------------------------------------------------------------------------ checks


class GrowthError(RuntimeError):
    """A grown model or optimizer that breaks an invariant: a bug in an operator."""


def check_training_state(model: GPT, optimizer: torch.optim.Optimizer | None) -> None:
    """After every growth: every trainable parameter is in the optimizer, exactly once, and a tied
    output projection is still the input embedding (an untied one is not)."""
    if (model.lm_head.weight is model.embed.weight) != model.config.tie:
        raise GrowthError(
            f"the output projection is {'no longer' if model.config.tie else 'now'} tied to the embedding"
        )
    if optimizer is None:
        return
    in_optimizer = [p for group in optimizer.param_groups for p in group["params"]]
    ids = [id(p) for p in in_optimizer]
    if len(ids) != len(set(ids)):
        raise GrowthError("a parameter is in the optimizer twice")
    names = {id(p): n for n, p in model.named_parameters()}
    missing = [names[id(p)] for p in model.parameters() if p.requires_grad and id(p) not in set(ids)]
    if missing:
        raise GrowthError(f"trainable parameters missing from the optimizer: {', '.join(missing)}")
    stray = [p for p in in_optimizer if id(p) not in names]
    if stray:
        raise GrowthError(f"{len(stray)} tensors in the optimizer are not the model's parameters")


# ------------------------------------------------------------------------------ dispatch


def implementation(operator: str, dim: Dim, catalogue: Catalogue | None = None) -> Operator:
    """The function that performs an operator, from its catalogue entry's `impl` path."""
    entry = (catalogue or default_catalogue()).get(operator, dim)
    if entry is None:
        raise KeyError(f"no operator `{operator}` grows {dim}")
    module, _, name = entry.impl.partition(":")
    function = getattr(importlib.import_module(module), name)
    if not callable(function):
        raise TypeError(f"`{entry.impl}`, the implementation of `{operator}`, is not a function")
    return cast(Operator, function)


def grow(
    model: GPT,
    optimizer: torch.optim.Optimizer | None,
    spec: GrowthSpec,
    generator: torch.Generator,
    *,
    reset_optimizer: bool = False,
    catalogue: Catalogue | None = None,
) -> Grown:
    """Apply one operator, move (or with `reset_optimizer`, drop) the optimizer state, check."""
    grown = implementation(spec.operator, spec.dim, catalogue)(model, optimizer, spec, generator)
    if reset_optimizer and optimizer is not None:
        grown.optimizer = rebuild_optimizer(optimizer, model, grown.model, grown.mapping, reset=True)
    check_training_state(grown.model, grown.optimizer)
    return grown


def add_noise_(tensor: torch.Tensor, sigma: float, generator: torch.Generator) -> None:
    """Gaussian noise of standard deviation `sigma` times the tensor's own, in place."""
    if sigma <= 0 or tensor.numel() < 2:
        return
    std = tensor.float().std().item()  # a sharded tensor's (a DTensor): the whole tensor's, all ranks agree
    noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float32, device="cpu")
    tensor.add_(like(noise.to(tensor.device, tensor.dtype), tensor), alpha=sigma * std)


def like(whole: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`whole` laid out as `target` is: as it is, or where `target` is a DTensor (a sharded
    model's), cut to this rank's part of it with no communication (every rank holds `whole`)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(target, DTensor):
        return whole
    return distribute_tensor(whole, target.device_mesh, target.placements, src_data_rank=None)
