"""Mixtures on some layers only: Qwen-MoE's `mlp_only_layers` and `decoder_sparse_step` read and
written with transformers' logits, `upcycle(every=N)`, and every growth of such a model putting its
dense layers where the checker says (a copy is of its source's kind, a fresh layer of the one below
it), with the function kept where the operator promises it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lagdsl.families import read_config
from lagdsl.lang import layers
from lagdsl.lang.arch import param_count
from lagdsl.lang.catalogue import BUILTIN_OPERATORS
from lagdsl.model import GPT
from lagdsl.model.config import Mixture
from lagdsl.model.export import export_pretrained
from lagdsl.model.layers.mlp import MLP
from lagdsl.model.layers.moe import MoE
from lagdsl.ops import GrowthSpec, check_training_state, grow
from tests.test_moe import DEPTH_OPS, check, dense, step, tokens, trained

WIDTH_OPS = [e.name for e in BUILTIN_OPERATORS if e.dim == "width"]


def partly(dense_blocks: tuple[int, ...] = (1,), depth: int = 3, shared: int = 0):  # type: ignore[no-untyped-def]
    """A model of `depth` blocks whose MLPs are mixtures but for `dense_blocks`."""
    return dense(depth=depth, moe=Mixture(experts=4, top_k=2, hidden=24, shared=shared, dense=dense_blocks))


def kinds(model: GPT) -> tuple[int, ...]:
    """The blocks whose MLP is dense, as the modules are."""
    for i in range(model.config.depth):
        assert isinstance(model.block(i).mlp, MLP if i in model.config.moe.dense else MoE), i  # type: ignore[union-attr]
    return tuple(i for i in range(model.config.depth) if isinstance(model.block(i).mlp, MLP))


def test_layer_kinds_follow_a_layer_plan() -> None:
    assert layers.carried(layers.stack(3, 3), [1]) == (1, 4)  # copies are their source's kind
    assert layers.carried(layers.llama_pro(4, 2), [0, 1]) == (0, 1, 2)
    assert layers.carried(layers.on_top(3, 2), [2]) == (2, 3, 4)  # fresh layers: the kind below them
    assert layers.carried(layers.on_top(3, 2), [0]) == (0,)
    assert layers.carried(layers.slices([(1, 3), (0, 2)]), [0]) == (2,)
    assert layers.carried([layers.Layer(None), layers.Layer(0, count=2)], [0]) == (0, 1)  # fresh at the bottom


def test_a_mixture_with_dense_blocks_counts_trains_and_logs_its_mixture_blocks() -> None:
    config = partly(shared=16)
    model, _ = trained(config)
    assert kinds(model) == (1,)
    moe = config.moe
    assert moe is not None
    count = param_count(vocab=61, width=32, depth=3, mlp="swiglu", heads=4, moe=moe)
    assert count.total == model.num_params()
    assert count.block(1) == sum(p.numel() for p in model.block(1).parameters())
    assert count.block(0) == sum(p.numel() for p in model.block(0).parameters())
    x = tokens(config)
    model(x, x)
    assert len(model.routing) == 2 and len(model.expert_load()) == 2  # a row per mixture block
    with pytest.raises(ValueError, match="do not leave a mixture"):
        partly((0, 1, 2))


@pytest.mark.parametrize("op", DEPTH_OPS)
def test_every_depth_operator_puts_the_dense_layers_where_its_plan_says(op: str) -> None:
    model, optimizer = trained(partly())
    x = tokens(model.config)
    with torch.no_grad():
        before = model(x)[0]
    args = {"ranges": ((0, 3), (1, 3))} if op == "layers" else {}
    target = {"stack": 6, "llama_pro": 6, "layers": 5}.get(op, 5)
    result = grow(model, optimizer, GrowthSpec(op, "depth", target, args), torch.Generator().manual_seed(2))
    check_training_state(result.model, result.optimizer)
    grown = result.model
    entry = next(e for e in BUILTIN_OPERATORS if e.name == op and e.dim == "depth")
    plan = entry.layer_plan(3, target - 3, args)
    assert plan is not None
    assert kinds(grown) == layers.carried(plan, (1,))
    with torch.no_grad():
        after = grown(x)[0]
    if entry.preserves == "yes":
        torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert result.optimizer is not None
    step(grown, result.optimizer, x)


@pytest.mark.parametrize("op", WIDTH_OPS)
def test_every_width_operator_grows_dense_and_mixture_blocks_alike(op: str) -> None:
    model, optimizer = trained(partly(shared=16))
    x = tokens(model.config)
    with torch.no_grad():
        before = model(x)[0]
    result = grow(model, optimizer, GrowthSpec(op, "width", 64, {}), torch.Generator().manual_seed(2))
    check_training_state(result.model, result.optimizer)
    grown = result.model
    assert kinds(grown) == (1,)
    assert (
        grown.num_params()
        == param_count(vocab=61, width=64, depth=3, mlp="swiglu", heads=8, moe=grown.config.moe).total
    )
    with torch.no_grad():
        after = grown(x)[0]
    if next(e for e in BUILTIN_OPERATORS if e.name == op and e.dim == "width").preserves == "yes":
        torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_duplicating_the_experts_keeps_the_dense_blocks_as_they_are() -> None:
    model, optimizer = trained(partly())
    x = tokens(model.config)
    with torch.no_grad():
        before = model(x)[0]
    mlp = model.block(1).mlp
    result = grow(model, optimizer, GrowthSpec("duplicate", "experts", 8, {}), torch.Generator().manual_seed(2))
    check_training_state(result.model, result.optimizer)
    assert kinds(result.model) == (1,) and result.model.block(1).mlp is mlp
    with torch.no_grad():
        torch.testing.assert_close(result.model(x)[0], before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("every", [2, 3])
def test_upcycling_every_nth_layer_keeps_the_others_dense_and_the_function(every: int) -> None:
    model, optimizer = trained(dense(depth=4))
    x = tokens(model.config)
    with torch.no_grad():
        before = model(x)[0]
    mlps = [model.block(i).mlp for i in range(4)]
    spec = GrowthSpec("upcycle", "experts", 4, {"every": every})
    result = grow(model, optimizer, spec, torch.Generator().manual_seed(2))
    check_training_state(result.model, result.optimizer)
    grown = result.model
    mixtures = tuple(i for i in range(4) if (i + 1) % every == 0)  # transformers' `decoder_sparse_step`
    assert kinds(grown) == tuple(i for i in range(4) if i not in mixtures)
    assert all(grown.block(i).mlp is mlps[i] for i in range(4) if i not in mixtures)  # the same modules
    with torch.no_grad():
        torch.testing.assert_close(grown(x)[0], before, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ the checker

MODEL = "model gpt(context=32, width=32, heads=4, depth=3)"


def test_the_checker_carries_the_dense_layers_through_growth_and_the_plan_counts_them() -> None:
    found, schedule = check(
        MODEL,
        "stage m { grow experts to 4 with upcycle(every=2) train 10 steps }\n"
        "stage d { grow depth to 6 with llama_pro train 10 steps }\n"
        "stage w { grow width to 64 with net2net train 10 steps }\n"
        "stage e { grow experts to 8 with duplicate train 10 steps }",
    )
    assert found == []
    shapes = [stage.after.moe.dense for stage in schedule.stages[1:]]  # type: ignore[attr-defined]
    assert shapes == [(0, 2), (0, 1, 4, 5), (0, 1, 4, 5), (0, 1, 4, 5)]
    # what the model grown by the same operators is
    from lagdsl.model.config import GPTConfig
    from lagdsl.plan.build import build_plan

    model = GPT(GPTConfig.from_schedule(schedule))  # type: ignore[arg-type]
    model.init_weights(torch.Generator().manual_seed(0))
    for spec in (
        GrowthSpec("upcycle", "experts", 4, {"every": 2}),
        GrowthSpec("llama_pro", "depth", 6, {}),
        GrowthSpec("net2net", "width", 64, {}),
        GrowthSpec("duplicate", "experts", 8, {}),
    ):
        model = grow(model, None, spec, torch.Generator().manual_seed(1)).model
    assert model.config.moe is not None and model.config.moe.dense == (0, 1, 4, 5)
    plan = build_plan(schedule)  # type: ignore[arg-type]
    assert plan.totals.final.params == model.num_params()
    assert "dense in layers 0-1, 4-5" in str(schedule.final_shape)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("candidates", "codes"),
    [
        ("[stack, interleave]", ["E0406"]),  # dense layers 0, 3 and 5 / 0, 1, 4 and 5
        ("[interleave, llama_pro]", []),  # both copy each layer right after it
    ],
)
def test_a_depth_probe_must_put_the_dense_layers_in_the_same_places(candidates: str, codes: list[str]) -> None:
    found, _ = check(
        MODEL,
        "stage m { grow experts to 4 with upcycle(every=2) train 10 steps }\n"
        f"stage d {{ grow depth to 6 {{ candidates {candidates} probe 2 steps }} train 10 steps }}",
    )
    assert [c for c in found if c.startswith("E")] == codes


def test_the_checker_refuses_an_upcycling_that_leaves_no_mixture() -> None:
    found, _ = check(MODEL, "stage m { grow experts to 4 with upcycle(every=4) train 10 steps }")
    assert found == ["E0403"]


# ------------------------------------------------------------------------------ checkpoints

transformers = pytest.importorskip("transformers")

PARTLY = [("qwen3_moe", {"mlp_only_layers": [0]}, (0,)), ("qwen2_moe", {"decoder_sparse_step": 2}, (0, 2))]


@pytest.mark.parametrize(("kind", "overrides", "dense_layers"), PARTLY, ids=[p[0] for p in PARTLY])
def test_a_mixture_with_dense_layers_imports_with_transformers_logits_and_exports_back(
    kind: str, overrides: dict[str, object], dense_layers: tuple[int, ...], tmp_path: Path
) -> None:
    from tests.test_moe_families import IDS, make_mixture, ours
    from tests.test_pretrained import hf_logits

    source, hf_model = make_mixture(tmp_path / "source", kind, **overrides)
    expected, _ = hf_logits(source, IDS)
    family, model = ours(source)
    assert model.config.moe is not None and model.config.moe.dense == dense_layers and kinds(model) == dense_layers
    assert model.num_params() == sum(p.numel() for p in hf_model.parameters())  # type: ignore[attr-defined]
    assert family.arch(read_config(source)).params == model.num_params()  # the checker's count, from config.json
    with torch.no_grad():
        torch.testing.assert_close(model(IDS)[0], expected, atol=1e-5, rtol=0)
    out = tmp_path / "out"
    export_pretrained(model.state_dict(), model.config, family, read_config(source), source, out)
    again, (_, info) = hf_logits(out, IDS)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    torch.testing.assert_close(again, expected, atol=1e-5, rtol=0)
    written = read_config(out)
    assert written["mlp_only_layers"] == list(dense_layers) and written["decoder_sparse_step"] == 1


@pytest.mark.parametrize(
    "spec",
    [
        GrowthSpec("llama_pro", "depth", 6, {}),
        GrowthSpec("copy_top", "depth", 4, {}),
        GrowthSpec("duplicate", "experts", 12, {}),
        GrowthSpec("net2net", "width", 128, {}),
    ],
    ids=lambda s: s.operator,
)
def test_a_grown_mixture_with_dense_layers_exports_what_lagdsl_computes(spec: GrowthSpec, tmp_path: Path) -> None:
    """transformers reads the grown model's `mlp_only_layers` and computes lagdsl's logits."""
    from tests.test_moe_families import IDS, make_mixture, ours
    from tests.test_pretrained import hf_logits

    source, _ = make_mixture(tmp_path / "source", "qwen2_moe", decoder_sparse_step=2)
    family, model = ours(source)
    grown = grow(model, None, spec, torch.Generator().manual_seed(3)).model.eval()
    assert grown.config.moe is not None and grown.config.moe.dense
    with torch.no_grad():
        expected = grown(IDS)[0]
    out = tmp_path / "out"
    export_pretrained(grown.state_dict(), grown.config, family, read_config(source), source, out)
    again, (_, info) = hf_logits(out, IDS)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    torch.testing.assert_close(again, expected, atol=1e-5, rtol=0)
    assert read_config(out)["mlp_only_layers"] == list(grown.config.moe.dense)
