"""One growth of a training state: the operator applied (its new weights drawn from a generator of
seed, stage, growth and operator), the stage's frozen parts and LR scales resolved on the grown
model (`lagdsl.runtime.parts`), and the result checked to be the same on every rank. Under FSDP
the state is gathered first, grown as one process grows it, and sharded again."""

from __future__ import annotations

from lagdsl.lang.schedule import Growth, OperatorSpec, Stage
from lagdsl.ops import GrowthSpec, grow
from lagdsl.runtime import dist, parts
from lagdsl.runtime.seeds import generator
from lagdsl.runtime.state import Recipe, TrainState


def grown(
    recipe: Recipe, state: TrainState, stage: Stage, growth: Growth, op: OperatorSpec, index: int,
    team: dist.Team | None = None,
) -> TrainState:  # fmt: skip
    """`state` grown by `op`, the `index`-th growth of `stage`; `state`'s model and optimizer are
    spent. Checked to be the same on every rank (of `team`: a parallel probe's)."""
    sharded = recipe.sharded
    if sharded:  # gathered: grown exactly as one process grows it, then sharded again
        state = TrainState.from_state_dict(recipe.whole(), state.state_dict())
    gen = generator(recipe.schedule.seed, "grow", stage.name, index, op.label)
    spec = GrowthSpec(op.name, growth.dim, getattr(growth.after, growth.dim), op.args)
    result = grow(state.model, state.optimizer, spec, gen, reset_optimizer=stage.reset_optimizer)
    assert result.optimizer is not None
    state.model, state.optimizer = result.model, result.optimizer
    fresh = parts.fresh_after(result.mapping, state.fresh)
    state.set_parts(fresh, *parts.resolve(stage, state.model, fresh), force=True)
    dist.check_same(state.model, f"growth `{op.label}` in stage `{stage.name}`", team)
    return TrainState.from_state_dict(recipe, state.state_dict()) if sharded else state
