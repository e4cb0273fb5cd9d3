"""`activations recompute`: each block keeps only its input and runs again in the backward pass.
The losses and weights are the run's without it, the blocks a growth adds recompute too, and the
plan counts the memory it saves and the forward pass it adds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lagdsl.model.gpt as gpt
from lagdsl.lang import check_text
from lagdsl.lang.schedule import Schedule
from lagdsl.plan import build_plan
from lagdsl.plan.cost import CostModel
from lagdsl.runtime.data.corpus import Corpus
from tests.test_state import losses, make_engine

SCHEDULE = """
schedule recompute
seed 4
model gpt(context=8, width=16, heads=2, depth=1, dropout=0.1)
batch 4
optimizer adamw(lr=1e-2)
eval every 3 steps (batches=1)
{activations}
stage base {{ train 3 steps }}
stage deeper {{
  grow depth to 2 {{
    candidates [copy_top, identity]
    probe 2 steps
  }}
  train 4 steps
}}
"""


def checked(activations: str) -> Schedule:
    result = check_text(SCHEDULE.format(activations=activations), "recompute.grow")
    assert result.schedule is not None, result.diagnostics
    return result.schedule


def test_recomputed_blocks_train_to_the_same_losses_and_weights_grown_ones_too(
    corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = make_engine(checked(""), corpus, tmp_path, "kept")
    kept.initialize()
    assert kept.run()
    calls: list[int] = []
    checkpoint = gpt.checkpoint

    def counted(block: torch.nn.Module, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append(id(block))
        return checkpoint(block, *args, **kwargs)

    monkeypatch.setattr(gpt, "checkpoint", counted)
    recomputed = make_engine(checked("activations recompute"), corpus, tmp_path, "recomputed")
    recomputed.initialize()
    assert recomputed.run()
    # the same losses, evaluations, probe scores and winner (dropout included), bit for bit
    mine = [(event, {k: v for k, v in r.items() if k != "flops"}) for event, r in losses(tmp_path / "kept.jsonl")]
    theirs = [(e, {k: v for k, v in r.items() if k != "flops"}) for e, r in losses(tmp_path / "recomputed.jsonl")]
    assert mine == theirs
    for name, tensor in kept.state.model.state_dict().items():
        assert torch.equal(tensor, recomputed.state.model.state_dict()[name]), name
    # every training forward went through the checkpoint, a block at a time: 3 steps of one block,
    # then of two (the grown block too): 2 candidates x 2 probe steps, and the stage's 4 steps less
    # the winner's 2 probe steps, which are its first; evaluations none
    assert len(calls) == 3 * 1 + 2 * 2 * 2 + (4 - 2) * 2


def test_the_plan_counts_the_memory_recomputing_saves_and_the_forward_pass_it_adds() -> None:
    kept, recomputed = checked(""), checked("activations recompute")
    for a, b in zip(build_plan(kept).stages, build_plan(recomputed).stages, strict=True):
        assert (b.memory.weights, b.memory.optimizer) == (a.memory.weights, a.memory.optimizer)
        assert b.flops > a.flops
    # each layer's input kept and one layer's activations recomputed at a time: nothing saved at
    # one layer (its input is kept besides), less from two on
    one, two = (build_plan(schedule).stages for schedule in (kept, recomputed))
    assert two[0].memory.activations > one[0].memory.activations
    assert two[1].memory.activations < one[1].memory.activations
    shape = kept.stages[1].after
    per_token = CostModel(kept).flops_per_token(shape)
    tokens = kept.batch * kept.model.context
    # a step recomputes the forward pass: a third of the training FLOPs more
    extra = tokens * (per_token // 3)
    assert CostModel(recomputed).step_flops(shape, 1) == CostModel(kept).step_flops(shape, 1) + extra
