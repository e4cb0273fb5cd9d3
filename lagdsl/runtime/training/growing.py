"""One growth of a training state: the operator applied (its new weights drawn from a generator of
seed, stage, growth and operator), the stage's frozen parts and LR scales resolved on the grown
model (`lagdsl.runtime.training.parts`), and the result checked to be the same on every rank.

Under FSDP an operator given by its plan (every built-in one) grows each rank's shards
(`lagdsl.runtime.distributed.moves`): a depth operator with no communication, a width operator one tensor at a
time, so no rank holds the whole model. A plugin's operator that is a plain function gathers the
state, grows it as one process grows it, and shards it again.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from lagdsl.lang.schedule import Growth, OperatorSpec, Stage
from lagdsl.model.gpt import GPT
from lagdsl.ops import GrowthSpec, grow
from lagdsl.ops.context import lengthen
from lagdsl.ops.core import Carry, implementation
from lagdsl.ops.depth import PlannedDepth
from lagdsl.ops.experts import PlannedExperts
from lagdsl.ops.width import PlannedWidth
from lagdsl.runtime.distributed import moves
from lagdsl.runtime.distributed import world as dist
from lagdsl.runtime.state.seeds import generator
from lagdsl.runtime.state.train_state import Recipe, TrainState
from lagdsl.runtime.training import parts


def grown(
    recipe: Recipe, state: TrainState, stage: Stage, growth: Growth, op: OperatorSpec, index: int,
    team: dist.Team | None = None,
) -> TrainState:  # fmt: skip
    """`state` grown by `op`, the `index`-th growth of `stage`; `state`'s model and optimizer are
    spent. Checked to be the same on every rank (of `team`: a parallel probe's)."""
    gen = generator(recipe.schedule.seed, "grow", stage.name, index, op.label)
    spec = GrowthSpec(op.name, growth.dim, getattr(growth.after, growth.dim), op.args)
    if growth.dim == "context":  # no weight moves: the same modules (whole or sharded), a longer context
        lengthen(state.model, spec)
        state.set_parts(state.fresh, *parts.resolve(stage, state.model, state.fresh))
        return state
    operator = implementation(op.name, growth.dim)
    if recipe.sharded and isinstance(operator, PlannedDepth | PlannedWidth | PlannedExperts):
        return _grown_shards(recipe, state, stage, operator, spec, gen)
    sharded = recipe.sharded
    if sharded:  # gathered: grown exactly as one process grows it, then sharded again
        state = TrainState.from_state_dict(recipe.whole(), state.state_dict())
    result = grow(state.model, state.optimizer, spec, gen, reset_optimizer=stage.reset_optimizer)
    assert result.optimizer is not None
    state.model, state.optimizer = result.model, result.optimizer
    fresh = parts.fresh_after(result.mapping, state.fresh)
    state.set_parts(fresh, *parts.resolve(stage, state.model, fresh), force=True)
    dist.check_same(state.model, f"growth `{op.label}` in stage `{stage.name}`", team)
    return TrainState.from_state_dict(recipe, state.state_dict()) if sharded else state


def _grown_shards(
    recipe: Recipe,
    state: TrainState,
    stage: Stage,
    operator: PlannedDepth | PlannedWidth | PlannedExperts,
    spec: GrowthSpec,
    gen: torch.Generator,
) -> TrainState:
    """A sharded state grown shard by shard (`lagdsl.runtime.distributed.moves`): what one process grows."""
    fresh: frozenset[str] = frozenset()

    def resolved(mapping: Mapping[str, Carry | None], skeleton: GPT) -> tuple[frozenset[str], dict[str, float]]:
        nonlocal fresh
        fresh = parts.fresh_after(mapping, state.fresh)
        return parts.resolve(stage, skeleton, fresh)

    if isinstance(operator, PlannedDepth):
        plan = operator.plan(state.model.config.depth, spec)
        model, mapping, frozen, scales = moves.grow_depth(recipe, state.model, plan, gen, resolved)
    elif isinstance(operator, PlannedExperts):
        experts = operator.plan(state.model.config, spec)
        model, mapping, frozen, scales = moves.grow_experts(recipe, state.model, experts, gen, resolved)
    else:
        width = operator.plan(state.model.config, spec)
        model, mapping, frozen, scales = moves.grow_width(recipe, state.model, width, gen, resolved)
    if stage.reset_optimizer:
        optimizer = recipe.optimizer(model, scales)
    else:
        optimizer = moves.moved_optimizer(recipe, model, scales, state.model, state.optimizer, mapping)
    state.model, state.optimizer = model, optimizer
    state.fresh, state.frozen, state.scales = fresh, frozen, dict(scales)
    return state
