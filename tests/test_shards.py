"""Every built-in operator grows a sharded training state (FSDP2 on two Gloo ranks) to what it grows
in one process: the same weights and the same Adam moments, within 1e-6, on a model with
grouped-query attention, q/k/v biases, q/k norms and an untied head (a Qwen-like shape). Depth
operators grow each rank's shards; width operators a tensor at a time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from lagdsl.lang import check_text
from lagdsl.model.gpt import GPT, GPTConfig
from lagdsl.runtime import growing
from lagdsl.runtime.dist import World
from lagdsl.runtime.state import Device, Recipe, TrainState

SCHEDULE = """
schedule shards
seed 5
parallel fsdp
model gpt(context=8, width=16, heads=4, kv_heads=2, depth=2, tie=false)
batch 2
optimizer adamw(lr=1e-2, weight_decay=0.1)
stage base { train 2 steps }
stage deep {
  grow depth to 4 {
    candidates [copy_top(noise=0.05), copy_bottom, midas, stack, interleave, random, identity,
                layers([[0, 2], [0, 2]]), llama_pro]
    probe 1 steps
  }
  train 1 steps
}
stage wide {
  grow width to 32 { candidates [net2net(noise=0.05), hyperclone, zero, random] probe 1 steps }
  train 1 steps
}
"""
CONFIG = GPTConfig(vocab=64, context=8, width=16, heads=4, depth=2, kv_heads=2, tie=False, qkv_bias=True, qk_norm=True)
CPU = Device(torch.device("cpu"), None)


def trained(recipe: Recipe) -> TrainState:
    """A whole model with every value and moment set (biases and norm gains too): two Adam steps
    on seeded gradients."""
    generator = torch.Generator().manual_seed(11)
    model = GPT(CONFIG)
    model.init_weights(generator)
    optimizer = recipe.optimizer(model)
    for _ in range(2):
        for param in model.parameters():
            param.grad = torch.randn(param.shape, generator=generator)
        optimizer.step()
    return TrainState(recipe, model, optimizer)


def grow_both(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    try:
        checked = check_text(SCHEDULE, "shards.grow")
        assert checked.schedule is not None, checked.diagnostics
        schedule = checked.schedule
        one, sharded = Recipe(schedule, CPU), Recipe(schedule, CPU, World(rank=rank, size=2, launched=True))
        saved = trained(one).state_dict()
        found: dict[str, dict[str, object]] = {}
        for stage in schedule.stages[1:]:
            (growth,) = stage.growths
            assert growth.probe is not None
            for op in growth.probe.candidates:
                expected = growing.grown(one, TrainState.from_state_dict(one, saved), stage, growth, op, 0)
                grown = growing.grown(sharded, TrainState.from_state_dict(sharded, saved), stage, growth, op, 0)
                mine, theirs = grown.whole_state(), expected.whole_state()  # the test alone gathers
                assert mine[0].keys() == theirs[0].keys()
                found[f"{growth.dim} {op.label}"] = {
                    "weights": max((mine[0][k] - theirs[0][k]).abs().max().item() for k in theirs[0]),
                    "moments": _moments_apart(mine[1], theirs[1]),
                    "shape": [grown.model.config.depth, grown.model.config.width],
                }
        if rank == 0:
            (Path(folder) / "found.json").write_text(json.dumps(found))
    finally:
        torch_dist.destroy_process_group()


def _moments_apart(mine: dict, theirs: dict) -> float:
    """The largest difference between two optimizers' moments (the same parameters, by index)."""
    assert mine["state"].keys() == theirs["state"].keys() and theirs["state"]
    apart = 0.0
    for index, state in theirs["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            apart = max(apart, (mine["state"][index][key] - state[key]).abs().max().item())
        assert float(mine["state"][index]["step"]) == float(state["step"])
    return apart


@pytest.mark.slow
def test_every_operator_grows_a_sharded_state_to_the_one_process_growth(tmp_path: Path) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(grow_both, args=(str(tmp_path),), nprocs=2)
    found = json.loads((tmp_path / "found.json").read_text())
    assert len(found) == 13  # nine depth operators, four width ones
    for label, apart in found.items():
        assert apart["weights"] <= 1e-6 and apart["moments"] <= 1e-6, (label, apart)
    assert {tuple(apart["shape"]) for apart in found.values()} == {(4, 16), (2, 32)}  # depth, width
