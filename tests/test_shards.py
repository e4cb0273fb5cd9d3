"""Every built-in operator grows a sharded training state (FSDP2 on two Gloo ranks) to what it grows
in one process: the same weights and the same Adam moments, within 1e-6, on a model with
grouped-query attention, q/k/v biases, q/k norms and an untied head (a Qwen-like shape). Depth
operators grow each rank's shards; width operators a tensor at a time."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from lagdsl.lang import check_text
from lagdsl.model.config import GPTConfig
from lagdsl.model.gpt import GPT
from lagdsl.runtime.distributed import moves
from lagdsl.runtime.distributed.world import World
from lagdsl.runtime.state.train_state import Device, Recipe, TrainState, restore
from lagdsl.runtime.training import growing
from tests import forked

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
        checked = check_text(SCHEDULE, "moves.grow")
        assert checked.schedule is not None, checked.diagnostics
        schedule = checked.schedule
        one, sharded = Recipe(schedule, CPU), Recipe(schedule, CPU, World(rank=rank, size=2, launched=True))
        saved = trained(one).state_dict()
        found: dict[str, dict[str, object]] = {}
        for stage in schedule.stages[1:]:
            (growth,) = stage.growths
            assert growth.probe is not None
            for op in growth.probe.candidates:
                # restored as a probe restores its snapshot: the optimizer given copies (steps are
                # counted in place, and both states would otherwise count on `saved`'s tensors)
                expected = growing.grown(one, restore(one, saved), stage, growth, op, 0)
                state = restore(sharded, saved)
                before = _storages(state)
                grown = growing.grown(sharded, state, stage, growth, op, 0)
                mine, theirs = grown.whole_state(), expected.whole_state()  # the test alone gathers
                assert mine[0].keys() == theirs[0].keys()
                label = f"{growth.dim} {op.label}"
                found[label] = {
                    "weights": max((mine[0][k] - theirs[0][k]).abs().max().item() for k in theirs[0]),
                    "moments": _moments_apart(mine[1], theirs[1]),
                    "shape": [grown.model.config.depth, grown.model.config.width],
                }
                if growth.dim == "depth":  # kept shards are taken over, not copied, and train on
                    found[label]["reused"] = _reused(before, _storages(grown))
                    found[label]["tensors"] = sorted(_storages(grown))
                    _step(expected), _step(grown)
                    mine, theirs = grown.whole_state(), expected.whole_state()
                    found[label]["trained"] = max((mine[0][k] - theirs[0][k]).abs().max().item() for k in theirs[0])
                    found[label]["reused after a step"] = _reused(before, _storages(grown))
        if rank == 0:
            (Path(folder) / "found.json").write_text(json.dumps(found))
    finally:
        torch_dist.destroy_process_group()


def grow_uneven(rank: int, folder: str) -> None:
    """Every depth operator on 3 ranks, where FSDP cuts most tensors unevenly (16 rows as 6, 6, 4; a
    q/k norm's 4 as 2, 2, 0) and pads the shards it takes over: two steps after the growth."""
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=3)
    try:
        schedule = check_text(SCHEDULE, "moves.grow").schedule
        assert schedule is not None
        one, sharded = Recipe(schedule, CPU), Recipe(schedule, CPU, World(rank=rank, size=3, launched=True))
        saved = trained(one).state_dict()
        stage = schedule.stages[1]
        (growth,) = stage.growths
        assert growth.probe is not None
        found = {}
        for op in growth.probe.candidates:
            expected = growing.grown(one, restore(one, saved), stage, growth, op, 0)
            grown = growing.grown(sharded, restore(sharded, saved), stage, growth, op, 0)
            for _ in range(2):
                _step(expected), _step(grown)
            mine, theirs = grown.whole_state(), expected.whole_state()
            found[op.label] = max((mine[0][k] - theirs[0][k]).abs().max().item() for k in theirs[0])
        # a model held in bf16 (a pretrained checkpoint read as `dtype=bf16`) grows in bf16, as one
        # process grows it, and trains on
        whole = GPT(CONFIG)
        whole.init_weights(torch.Generator().manual_seed(1))
        model = moves.empty_model(sharded, CONFIG, dtype=torch.bfloat16)
        moves.fill(model, whole.state_dict())
        op = next(op for op in growth.probe.candidates if op.label == "copy_top(noise=0.05)")
        bf16 = growing.grown(sharded, TrainState(sharded, model, sharded.optimizer(model)), stage, growth, op, 0)
        _step(bf16)
        found["bf16"] = sorted({str(param.dtype) for param in bf16.model.parameters()})
        # and every width operator grows it in bf16 too (a tensor at a time), its moments in bf16,
        # as one process grows it: a step after, the same weights to bf16's precision
        wide = schedule.stages[2]
        (widening,) = wide.growths
        assert widening.probe is not None
        for op in widening.probe.candidates:
            states = []
            for recipe in (one, sharded):
                held = GPT(CONFIG)
                held.init_weights(torch.Generator().manual_seed(1))
                model = (
                    moves.empty_model(recipe, CONFIG, dtype=torch.bfloat16) if recipe is sharded else held.bfloat16()
                )
                if recipe is sharded:
                    moves.fill(model, held.state_dict())
                before = TrainState(recipe, model, recipe.optimizer(model))
                _step(before)  # moments in bf16 to move (the run that died had them)
                state = growing.grown(recipe, before, wide, widening, op, 0)
                _step(state)
                states.append(state)
            mine, theirs = states[1].whole_state(), states[0].whole_state()
            dtypes = {str(p.dtype) for p in states[1].model.parameters()}
            dtypes |= {str(v.dtype) for s in states[1].optimizer.state.values() for k, v in s.items() if k != "step"}
            apart = max((mine[0][k].float() - theirs[0][k].float()).abs().max().item() for k in theirs[0])
            found[f"bf16 {op.label}"] = {"dtypes": sorted(dtypes), "apart": apart}
        if rank == 0:
            (Path(folder) / "found.json").write_text(json.dumps(found))
    finally:
        torch_dist.destroy_process_group()


def _storages(state: TrainState) -> dict[str, int]:
    """Where each parameter's local shard and each of its moments lives (by name)."""
    found = {}
    moments = state.optimizer.state
    for name, param in state.model.named_parameters():
        local = param.to_local() if hasattr(param, "to_local") else param
        found[name] = local.untyped_storage().data_ptr()
        for key, value in moments.get(param, {}).items():
            if key != "step":
                found[f"{name} {key}"] = value.to_local().untyped_storage().data_ptr()
    return found


def _reused(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """The tensors of a grown state (by name) that are the old state's own memory."""
    old = set(before.values())
    return sorted(name for name, pointer in after.items() if pointer in old)


def _step(state: TrainState) -> None:
    """One AdamW step of `state` on a fixed batch (every rank the same batch: FSDP's mean of the
    ranks' gradients is then one process's gradient)."""
    tokens = torch.arange(2 * 9).reshape(2, 9) % CONFIG.vocab
    _, loss = state.model(tokens[:, :-1], tokens[:, 1:])
    assert loss is not None
    loss.backward()
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)


def _moments_apart(mine: dict, theirs: dict) -> float:
    """The largest difference between two optimizers' moments (the same parameters, by index)."""
    assert mine["state"].keys() == theirs["state"].keys() and theirs["state"]
    apart = 0.0
    for index, state in theirs["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            apart = max(apart, (mine["state"][index][key] - state[key]).abs().max().item())
        assert float(mine["state"][index]["step"]) == float(state["step"])
    return apart


def spawn(ranks_body: Callable[[int, str], None], folder: Path, ranks: int) -> None:
    """`ranks_body(rank, folder)` on `ranks` processes forked from the test's preloaded server
    (`tests/forked.py`: no process imports torch again), each raising what its body raised."""
    forked.context()
    mp.start_processes(ranks_body, args=(str(folder),), nprocs=ranks, start_method="forkserver")


@pytest.mark.slow
def test_every_operator_grows_a_sharded_state_to_the_one_process_growth(tmp_path: Path) -> None:
    spawn(grow_both, tmp_path, ranks=2)
    found = json.loads((tmp_path / "found.json").read_text())
    assert len(found) == 13  # nine depth operators, four width ones
    for label, apart in found.items():
        assert apart["weights"] <= 1e-6 and apart["moments"] <= 1e-6, (label, apart)
        if label.startswith("depth"):  # and one step later: FSDP trained on the shards it took over
            assert apart["trained"] <= 1e-5, (label, apart)
            assert apart["reused"] == apart["reused after a step"], label
    # copy_top 2 -> 4 keeps both old layers (weights and moments), the embedding, norm and head
    # copy_top 2 -> 4 takes over both old layers' weights and moments, the embedding, norm and head;
    # only the copies (blocks 2 and 3) are new memory
    copy_top = found["depth copy_top(noise=0.05)"]
    assert copy_top["reused"] == [n for n in copy_top["tensors"] if not n.startswith(("blocks.2.", "blocks.3."))]
    assert "embed.weight" in copy_top["reused"] and "lm_head.weight exp_avg_sq" in copy_top["reused"]
    assert {tuple(apart["shape"]) for apart in found.values()} == {(4, 16), (2, 32)}  # depth, width


@pytest.mark.slow
def test_a_growth_over_uneven_shards_trains_as_one_process_in_fp32_and_in_bf16(tmp_path: Path) -> None:
    spawn(grow_uneven, tmp_path, ranks=3)
    found = json.loads((tmp_path / "found.json").read_text())
    assert found.pop("bf16") == ["torch.bfloat16"]
    for op in ("net2net(noise=0.05)", "hyperclone", "zero", "random"):  # width growth held in bf16
        grown = found.pop(f"bf16 {op}")
        assert grown["dtypes"] == ["torch.bfloat16"], (op, grown)  # weights and moments, as one process
        assert grown["apart"] <= 1e-3, (op, grown)  # (0 here; at most a bf16 rounding of these weights)
    assert len(found) == 9  # every depth operator
    for label, apart in found.items():
        assert apart <= 1e-5, (label, apart)
