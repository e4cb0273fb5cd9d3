"""Freezing and LR scales: the parts of the model a stage names, resolved to parameter names.

Freezing is a property of the training state, not of a module: `TrainState.frozen` is a set of
parameter names, `TrainState.scales` the LR multiplier of each scaled one. Both are resolved from
the stage's `freeze` and `lr_scale` after each of its growths (and at its start when it grows
nothing), from `TrainState.fresh`: the names of the parameters the stage's growths made (`new`;
every other one is `old`). A growth's mapping says which those are: a parameter that is its
source (kept, or widened in place) is old; a copy or a fresh one is new. Frozen parameters have
`requires_grad=False` and are in no optimizer group, so they get no gradient, no update, no weight
decay and no optimizer state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from lagdsl.artifacts import PartsEvent
from lagdsl.lang.schedule import Part, Stage
from lagdsl.model.gpt import GPT
from lagdsl.ops.core import Carry

if TYPE_CHECKING:
    from lagdsl.runtime.state.train_state import TrainState


def fresh_after(mapping: Mapping[str, Carry | None], fresh: Iterable[str]) -> frozenset[str]:
    """The stage's new parameters after one more growth: copies, fresh ones, and what came from
    a new one."""
    before = set(fresh)
    new = set()
    for name, carry in mapping.items():
        if carry is None or carry.source in before or (not carry.shared and carry.transform is None):
            new.add(name)
    return frozenset(new)


def names_of(part: Part, model: GPT, fresh: frozenset[str]) -> set[str]:
    """The names of the parameters `part` names in `model` (a tied head is the embedding)."""
    names = [name for name, _ in model.named_parameters()]
    if part.kind == "old":
        return {n for n in names if n not in fresh}
    if part.kind == "new":
        return {n for n in names if n in fresh}
    if part.kind == "embed":  # the token embedding, and learned positions where the model has them (GPT-2)
        return {n for n in ("embed.weight", "pos.weight") if n in names}
    if part.kind == "head":
        return {"lm_head.weight" if "lm_head.weight" in names else "embed.weight"}
    layers = {f"blocks.{i}." for i in range(part.start, part.end)}
    return {n for n in names if n[: n.find(".", len("blocks.")) + 1] in layers}


def resolve(stage: Stage | None, model: GPT, fresh: frozenset[str]) -> tuple[frozenset[str], dict[str, float]]:
    """What `stage` freezes and the LR scale of each scaled parameter (1 left out)."""
    if stage is None:
        return frozenset(), {}
    frozen: set[str] = set()
    for part in stage.freeze:
        frozen |= names_of(part, model, fresh)
    scales: dict[str, float] = {}
    for part, scale in stage.lr_scale:
        scales.update(dict.fromkeys(names_of(part, model, fresh), scale))
    return frozenset(frozen), {n: s for n, s in scales.items() if s != 1.0 and n not in frozen}


def frozen_matmul_params(model: GPT, frozen: frozenset[str]) -> int:
    """The frozen parameters the FLOP count covers (the blocks'; the embedding and a tied head are
    outside it): each saves its weight gradient, 2 of the 6 FLOPs per parameter and token."""
    return sum(p.numel() for n, p in model.named_parameters() if n in frozen and n.startswith("blocks."))


def event(stage: Stage, state: TrainState) -> PartsEvent:
    """What `stage` freezes and scales, as the run's log records it from `state`'s step on."""
    frozen = sum(p.numel() for n, p in state.model.named_parameters() if n in state.frozen)
    return PartsEvent(
        stage=stage.name, step=state.step, freeze=[str(p) for p in stage.freeze], frozen_params=frozen,
        params=state.model.num_params(), lr_scale={str(part): scale for part, scale in stage.lr_scale},
    )  # fmt: skip
