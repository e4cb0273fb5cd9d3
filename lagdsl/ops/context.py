"""Context operators: the model's context grows and its rotary positions change by a method
(`lagdsl.lang.context_args`: keep, theta, pi, ntk, yarn, llama3). No weight changes: the grown
model is the same module with a new config and new rotary tables, every parameter and its
optimizer state kept, so the growth costs nothing and needs no gathering under FSDP."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch.optim import Optimizer

from lagdsl.lang.context_args import grown_positions
from lagdsl.lang.schedule import Positions
from lagdsl.model.config import GPTConfig
from lagdsl.model.gpt import GPT
from lagdsl.ops.core import Carry, Grown, GrowthError, GrowthSpec

__all__ = ["keep", "llama3", "ntk", "pi", "theta", "yarn"]


def lengthened(config: GPTConfig, spec: GrowthSpec) -> GPTConfig:
    """The config of a model of `config` whose context `spec` grows (what the checker computed)."""
    before = Positions(context=config.context, theta=config.rope_theta, rope=config.rope_scaling)
    after = grown_positions(
        spec.operator, dict(spec.args), before, spec.target, config.style.rotary_size(config.head_size)
    )
    if isinstance(after, str):
        raise GrowthError(after)
    return replace(config, context=after.context, rope_theta=after.theta, rope_scaling=after.rope)


def lengthen(model: GPT, spec: GrowthSpec) -> None:
    """`model` (a whole or a sharded one) given the longer context in place: its rotary tables too."""
    model.config = lengthened(model.config, spec)
    model.init_buffers()


def _grow(model: GPT, optimizer: Optimizer | None, spec: GrowthSpec, generator: torch.Generator) -> Grown:
    lengthen(model, spec)
    mapping: dict[str, Carry | None] = {name: Carry(name, shared=True) for name, _ in model.named_parameters()}
    return Grown(model, optimizer, mapping)


keep = theta = pi = ntk = yarn = llama3 = _grow
