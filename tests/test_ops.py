"""The model and the growth operators: shapes, placement, function, optimizer state, determinism."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lagdsl
from lagdsl.lang.arch import param_count
from lagdsl.lang.catalogue import BUILTIN_OPERATORS, Catalogue, default_catalogue
from lagdsl.lang.layers import interleave_sources, normalize, positions
from lagdsl.model import GPT, GPTConfig
from lagdsl.ops import GrowthError, GrowthSpec, check_training_state, grow
from tests.conftest import ROOT

PLUGINS = ROOT / "tests" / "plugins"
DEPTH_OPS = [e.name for e in BUILTIN_OPERATORS if e.dim == "depth"]
WIDTH_OPS = [e.name for e in BUILTIN_OPERATORS if e.dim == "width"]
PRESERVES = {(e.name, e.dim): e.preserves for e in BUILTIN_OPERATORS}
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def trained(config: GPTConfig, seed: int = 0, steps: int = 2, optimizer: str = "adamw"):
    """A model and optimizer after a few steps, so every parameter has optimizer state."""
    model = GPT(config)
    model.init_weights(torch.Generator().manual_seed(seed))
    if optimizer == "adamw":
        opt = torch.optim.AdamW(model.param_groups(0.1), lr=1e-2)
    else:
        opt = torch.optim.SGD(model.param_groups(0.0), lr=1e-2, momentum=0.9)
    data = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        idx = torch.randint(0, config.vocab, (2, config.context), generator=data)
        _, loss = model(idx, idx)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def tokens(config: GPTConfig, seed: int = 7) -> torch.Tensor:
    return torch.randint(0, config.vocab, (2, config.context), generator=torch.Generator().manual_seed(seed))


def valid_depth_growth(op: str, d: int, b: int) -> bool:
    if op in ("copy_top", "copy_bottom", "midas", "interleave", "layers"):
        return b <= d
    if op == "stack":
        return b % d == 0
    if op == "llama_pro":
        return d % b == 0
    return True


def depth_args(op: str, d: int, b: int) -> dict[str, object]:
    """The arguments an operator needs to add b layers to d: `layers` lists the old layers, then
    copies of the top b (copy_top's stack, written as ranges)."""
    return {"ranges": ((0, d), (d - b, d))} if op == "layers" else {}


@st.composite
def depth_cases(draw: st.DrawFn):
    op = draw(st.sampled_from(DEPTH_OPS))
    d = draw(st.integers(1, 4))
    b = draw(st.integers(1, 4))
    if not valid_depth_growth(op, d, b):
        b = d if op in ("stack", "llama_pro") else min(b, d)
    heads = draw(st.sampled_from([1, 2, 4]))
    mlp = draw(st.sampled_from(["swiglu", "gelu"]))
    return op, GPTConfig(64, 8, 8 * heads, heads, d, mlp), d + b


@st.composite
def width_cases(draw: st.DrawFn):
    op = draw(st.sampled_from(WIDTH_OPS))
    head = draw(st.sampled_from([4, 8]))
    heads = draw(st.integers(1, 3))
    more = draw(st.integers(1, 3))
    if op == "hyperclone":  # it multiplies the width
        more = heads * draw(st.integers(1, 2))
    mlp = draw(st.sampled_from(["swiglu", "gelu"]))
    config = GPTConfig(64, 8, head * heads, heads, draw(st.integers(1, 2)), mlp)
    return op, config, head * (heads + more)


# ------------------------------------------------------------------------------ the model


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 300),
    st.integers(1, 8),
    st.sampled_from([4, 8, 16]),
    st.integers(1, 4),
    st.sampled_from(["swiglu", "gelu"]),
)
def test_parameter_count_equals_the_cost_model(vocab: int, heads: int, head: int, depth: int, mlp: str) -> None:
    with torch.device("meta"):
        model = GPT(GPTConfig(vocab, 8, heads * head, heads, depth, mlp))
    count = param_count(vocab=vocab, width=heads * head, depth=depth, mlp=mlp)
    assert model.num_params() == count.total
    assert sum(p.numel() for n, p in model.named_parameters() if n != "embed.weight") == count.non_embedding


def test_model_basics() -> None:
    config = GPTConfig(64, 8, 16, 2, 2)
    model = GPT(config)
    model.init_weights(torch.Generator().manual_seed(0))
    assert model.lm_head.weight is model.embed.weight
    assert list(model.blocks) == ["0", "1"]
    logits, loss = model(tokens(config), tokens(config))
    assert logits.shape == (2, 8, 64) and loss.ndim == 0
    # causal: the first position's logits do not depend on later tokens
    changed = tokens(config).clone()
    changed[:, 1:] = (changed[:, 1:] + 1) % 64
    assert torch.allclose(model(changed)[0][:, 0], model(tokens(config))[0][:, 0], atol=1e-6)
    # scaled residual init
    assert model.blocks["0"].attn.o.weight.std() < model.blocks["0"].attn.qkv.weight.std()


# ------------------------------------------------------------------------------ every operator


def _check_growth(op: str, dim: str, config: GPTConfig, target: int, optimizer: str = "adamw") -> None:
    model, opt = trained(config, optimizer=optimizer)
    idx = tokens(config)
    with torch.no_grad():
        before = model(idx)[0]
    old_state = {n: {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[p].items()}
                 for n, p in model.named_parameters()}  # fmt: skip
    args = depth_args(op, config.depth, target - config.depth) if dim == "depth" else {}
    grown = grow(model, opt, GrowthSpec(op, dim, target, args), torch.Generator().manual_seed(3))
    new, new_opt = grown.model, grown.optimizer
    shape = new.config

    # the shape and parameter count the plan expects
    assert getattr(shape, dim) == target
    assert new.num_params() == param_count(vocab=64, width=shape.width, depth=shape.depth, mlp=config.mlp).total
    # every trainable parameter in the optimizer, the tie intact
    check_training_state(new, new_opt)
    assert new.lm_head.weight is new.embed.weight

    # optimizer state: copies carry their source's, new parameters none
    for name, param in new.named_parameters():
        if name == "lm_head.weight":
            continue
        carry = grown.mapping[name]
        state = new_opt.state.get(param)
        if carry is None:
            assert not state, name
            continue
        source_state = old_state[carry.source]
        assert state is not None, name
        if "step" in source_state:  # Adam: the step count carries over
            assert torch.equal(torch.as_tensor(state["step"]), torch.as_tensor(source_state["step"]))
        if dim == "depth":
            for key in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
                if key in source_state:
                    assert torch.equal(state[key], source_state[key]), (name, key)

    # function: preserved exactly where the catalogue says so; otherwise changed, and trainable
    with torch.no_grad():
        after = new(idx)[0]
    if PRESERVES[(op, dim)] == "yes":
        assert (after - before).abs().max() < 1e-5
    elif PRESERVES[(op, dim)] == "no":
        assert (after - before).abs().max() > 1e-4
        _, loss = new(idx, idx)
        loss.backward()
        for name, param in new.named_parameters():
            carry = grown.mapping.get(name)
            if carry is None or not carry.shared:
                assert param.grad is not None and param.grad.abs().sum() > 0, name


@FAST
@given(depth_cases())
def test_depth_operators(case) -> None:
    op, config, target = case
    _check_growth(op, "depth", config, target)


@FAST
@given(width_cases())
def test_width_operators(case) -> None:
    op, config, target = case
    _check_growth(op, "width", config, target)


@pytest.mark.parametrize(("op", "dim", "target"), [("copy_top", "depth", 4), ("net2net", "width", 24)])
def test_sgd_momentum_moves_too(op: str, dim: str, target: int) -> None:
    _check_growth(op, dim, GPTConfig(64, 8, 16, 2, 2), target, optimizer="sgd")


# ------------------------------------------------------------------------------ placement


def expected_sources(op: str, d: int, b: int) -> list[int | None]:
    """The language's definitions, written out independently of the implementation."""
    if op == "copy_top":
        return list(range(d)) + list(range(d - b, d))
    if op == "copy_bottom":
        return list(range(d)) + list(range(b))
    if op == "midas":
        s = (d - b) // 2
        return list(range(s + b)) + list(range(s, s + b)) + list(range(s + b, d))
    if op == "stack":
        return list(range(d)) * (1 + b // d)
    if op == "interleave":
        chosen = interleave_sources(d, b)
        return [i for i in range(d) for _ in range(1 + (i in chosen))]
    if op == "layers":  # as `depth_args` lists them
        return list(range(d)) + list(range(d - b, d))
    if op == "llama_pro":
        return [i for i in range(d) for _ in range(1 + ((i + 1) % (d // b) == 0))]
    return list(range(d)) + [None] * b


def test_interleave_spacing() -> None:
    assert interleave_sources(4, 4) == [0, 1, 2, 3]  # b = d gives 1,1,2,2,...
    assert interleave_sources(4, 2) == [1, 3]
    assert interleave_sources(5, 1) == [2]


PLACEMENTS = [
    (op, d, b) for op in DEPTH_OPS for d, b in [(1, 1), (3, 1), (4, 2), (3, 3), (2, 4)] if valid_depth_growth(op, d, b)
]


@pytest.mark.parametrize(("op", "d", "b"), PLACEMENTS)
def test_layers_stand_where_the_spec_says(op: str, d: int, b: int) -> None:
    config = GPTConfig(64, 8, 16, 2, d)
    model, opt = trained(config, seed=d * 10 + b)
    layers = [{n: p.detach().clone() for n, p in model.blocks[str(i)].named_parameters()} for i in range(d)]
    spec = GrowthSpec(op, "depth", d + b, depth_args(op, d, b))
    new = grow(model, opt, spec, torch.Generator().manual_seed(0)).model
    seen: set[int] = set()
    for position, source in enumerate(expected_sources(op, d, b)):
        block = dict(new.blocks[str(position)].named_parameters())
        if source is None:
            assert all(not torch.equal(block[n], layers[i][n]) for i in range(d) for n in ("attn.qkv.weight",))
            if op == "identity":
                assert block["attn.o.weight"].abs().sum() == 0 and block["mlp.down.weight"].abs().sum() == 0
            continue
        zeroed = op == "llama_pro" and source in seen  # LLaMA Pro's copies write nothing at first
        seen.add(source)
        for name, value in layers[source].items():
            if zeroed and name in ("attn.o.weight", "mlp.down.weight"):
                assert block[name].abs().sum() == 0, (position, name)
            else:
                assert torch.equal(block[name], value), (op, position, source, name)


# operators whose layer plan is the whole model (LLaMA Pro's plan is interleave's, its copies zeroed)
COPYING = [e for e in BUILTIN_OPERATORS if e.dim == "depth" and e.name not in ("random", "identity", "llama_pro")]


@pytest.mark.parametrize(("d", "b"), [(2, 2), (3, 3), (4, 2), (3, 1), (4, 4)])
def test_the_catalogue_plans_the_layers_the_runtime_builds(d: int, b: int) -> None:
    """Two copying operators build the same model (the checker's W0202) exactly when the
    catalogue gives them the same layer plan; and each plan's sources are what the runtime placed."""
    config = GPTConfig(64, 8, 16, 2, d)
    built = {}
    for entry in COPYING:
        if not valid_depth_growth(entry.name, d, b):
            continue
        model, opt = trained(config, seed=3)
        spec = GrowthSpec(entry.name, "depth", d + b, depth_args(entry.name, d, b))
        grown = grow(model, opt, spec, torch.Generator().manual_seed(0)).model
        plan = entry.layer_plan(d, b, spec.args)
        assert plan is not None
        assert [layer.source for layer in positions(plan)] == expected_sources(entry.name, d, b)
        built[entry.name] = (tuple(normalize(plan)), grown.state_dict())
    names = sorted(built)
    assert len(names) >= 2
    for i, a in enumerate(names):
        for other in names[i + 1 :]:
            same_plan = built[a][0] == built[other][0]
            states = built[a][1], built[other][1]
            same_model = all(torch.equal(states[0][k], states[1][k]) for k in states[0])
            assert same_plan == same_model, (a, other, d, b)


def test_noise_perturbs_copies_only() -> None:
    config = GPTConfig(64, 8, 16, 2, 2)
    model, opt = trained(config)
    top = {n: p.detach().clone() for n, p in model.blocks["1"].named_parameters()}
    new = grow(model, opt, GrowthSpec("copy_top", "depth", 3, {"noise": 0.1}), torch.Generator().manual_seed(0)).model
    copy = dict(new.blocks["2"].named_parameters())
    original = dict(new.blocks["1"].named_parameters())
    diff = (copy["attn.qkv.weight"] - top["attn.qkv.weight"]).std() / top["attn.qkv.weight"].std()
    assert 0.05 < diff < 0.2  # about sigma = 0.1 of the tensor's own std
    assert torch.equal(original["attn.qkv.weight"], top["attn.qkv.weight"])


@pytest.mark.parametrize(
    ("op", "dim", "target"), [(o, "depth", 4) for o in DEPTH_OPS] + [(o, "width", 32) for o in WIDTH_OPS]
)
def test_the_same_seed_gives_the_same_result(op: str, dim: str, target: int) -> None:
    results = []
    for _ in range(2):
        model, opt = trained(GPTConfig(64, 8, 16, 2, 2))
        args = {"noise": 0.05} if op in ("copy_top", "midas", "stack", "net2net") else depth_args(op, 2, target - 2)
        spec = GrowthSpec(op, dim, target, args if dim == "depth" or op == "net2net" else {})
        grown = grow(model, opt, spec, torch.Generator().manual_seed(11))
        results.append({k: v.clone() for k, v in grown.model.state_dict().items()})
    assert results[0].keys() == results[1].keys()
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


# ------------------------------------------------------------------------------ width details


def test_width_operators_that_preserve_and_one_that_does_not() -> None:
    config = GPTConfig(64, 8, 16, 2, 2)
    idx = tokens(config)
    gaps = {}
    for op in ("net2net", "random", "zero"):
        model, opt = trained(config)
        with torch.no_grad():
            before = model(idx)[0]
            after = grow(model, opt, GrowthSpec(op, "width", 40), torch.Generator().manual_seed(0)).model(idx)[0]
        gaps[op] = (after - before).abs().max().item()
    assert gaps["net2net"] < 1e-5 and gaps["zero"] < 1e-5 < 1e-2 < gaps["random"]


@pytest.mark.parametrize(("mlp", "width", "target"), [("swiglu", 24, 48), ("swiglu", 16, 48), ("gelu", 16, 32)])
def test_hyperclone_preserves_a_trained_gpt_and_its_training_continues(mlp: str, width: int, target: int) -> None:
    """A tied `gpt` cloned x2 and x3, its optimizer state moved; with SwiGLU at widths 16 -> 48 the
    MLP grows from 48 to 128 units, not 3 x 48, and the copies' split still keeps the function."""
    config = GPTConfig(64, 8, width, 2, 2, mlp=mlp)
    model, opt = trained(config)
    idx = tokens(config)
    with torch.no_grad():
        before = model(idx)[0]
    grown = grow(model, opt, GrowthSpec("hyperclone", "width", target, {"noise": 0.1}), torch.Generator())
    assert grown.model.config.heads == 2 * target // width
    with torch.no_grad():
        torch.testing.assert_close(grown.model(idx)[0], before, atol=1e-5, rtol=0)
    loss = grown.model(idx, idx)[1]
    loss.backward()
    grown.optimizer.step()  # moved moments fit the grown parameters


def test_net2net_scales_copied_residual_dimensions_isometrically() -> None:
    model, opt = trained(GPTConfig(64, 8, 8, 1, 1))
    embedding = model.embed.weight.detach().clone()
    grown = grow(model, opt, GrowthSpec("net2net", "width", 16), torch.Generator().manual_seed(0)).model
    new = grown.embed.weight.detach()
    # the sum of squares of every token's embedding is unchanged: copies share their source's
    assert torch.allclose((new**2).sum(1), (embedding**2).sum(1), rtol=1e-5)
    assert grown.lm_head.weight is grown.embed.weight


def test_zero_width_keeps_old_state_and_starts_new_entries_at_zero() -> None:
    model, opt = trained(GPTConfig(64, 8, 16, 2, 1))
    old = model.blocks["0"].attn.o.weight  # [width, width]: rows write residual dims, columns read heads
    old_state = {k: v.clone() for k, v in opt.state[old].items()}
    grown = grow(model, opt, GrowthSpec("zero", "width", 32), torch.Generator().manual_seed(0))
    new = grown.model.blocks["0"].attn.o.weight
    state = grown.optimizer.state[new]
    rows, cols = old.shape
    assert torch.equal(state["exp_avg"][:rows, :cols], old_state["exp_avg"])
    assert torch.equal(state["exp_avg_sq"][:rows, :cols], old_state["exp_avg_sq"])
    assert state["exp_avg"][rows:].abs().sum() == 0 and state["exp_avg"][:, cols:].abs().sum() == 0
    assert torch.equal(state["step"], old_state["step"])
    # the norms' gains and epsilon are rescaled for the new zero dimensions
    assert grown.model.config.norm_eps == pytest.approx(model.config.norm_eps / 2)


def test_reset_optimizer_discards_all_state() -> None:
    model, opt = trained(GPTConfig(64, 8, 16, 2, 2))
    grown = grow(model, opt, GrowthSpec("copy_top", "depth", 3), torch.Generator(), reset_optimizer=True)
    assert len(grown.optimizer.state) == 0
    check_training_state(grown.model, grown.optimizer)
    assert grown.optimizer.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_the_check_catches_a_forgotten_parameter_and_a_broken_tie() -> None:
    model, opt = trained(GPTConfig(64, 8, 16, 2, 1))
    grown = grow(model, opt, GrowthSpec("copy_top", "depth", 2), torch.Generator())
    forgetful = torch.optim.AdamW(list(grown.model.blocks["0"].parameters()), lr=1e-3)
    with pytest.raises(GrowthError, match=r"missing from the optimizer: embed\.weight"):
        check_training_state(grown.model, forgetful)
    grown.model.lm_head.weight = torch.nn.Parameter(grown.model.embed.weight.detach().clone())
    with pytest.raises(GrowthError, match="no longer tied"):
        check_training_state(grown.model, grown.optimizer)


# ------------------------------------------------------------------------------ catalogue and plugins


def test_catalogue_and_implementations_agree() -> None:
    paths = {entry.impl for entry in Catalogue(plugins=False)}
    implemented = set()
    for module_name in ("lagdsl.ops.depth", "lagdsl.ops.width", "lagdsl.ops.experts", "lagdsl.ops.context"):
        module = importlib.import_module(module_name)
        implemented |= {f"{module_name}:{name}" for name in module.__all__}
    assert paths == implemented
    for path in paths:
        module, _, name = path.partition(":")
        assert callable(getattr(importlib.import_module(module), name))


@pytest.fixture
def demo_plugin(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    yield
    sys.modules.pop("lagdsl_demo_plugin", None)
    sys.modules.pop("lagdsl_demo_plugin.impl", None)


def test_a_plugin_operator_validates_and_runs(demo_plugin) -> None:
    assert default_catalogue().get("repeat_top", "depth") is not None
    text = """
model gpt(context=8, width=16, heads=2, depth=2)
batch 2
optimizer adamw(lr=1e-3)
stage a { train 5 steps }
stage b { grow depth by 2 { candidates [repeat_top(noise=0.0), copy_top] probe 2 steps } train 5 steps }
"""
    result = lagdsl.check_text(text, "plugin.grow")
    assert [d.code for d in result.errors] == []
    candidate = result.schedule.stages[1].growths[0].probe.candidates[0]
    model, opt = trained(GPTConfig(256, 8, 16, 2, 2))
    top = {n: p.detach().clone() for n, p in model.blocks["1"].named_parameters()}
    spec = GrowthSpec(candidate.name, "depth", 4, candidate.args)
    grown = grow(model, opt, spec, torch.Generator())
    for position in (2, 3):
        for name, value in grown.model.blocks[str(position)].named_parameters():
            assert torch.equal(value, top[name])
    bad = lagdsl.check_text(text.replace("noise=0.0", "nosie=0.0"), "plugin.grow")
    assert [d.code for d in bad.errors] == ["E0205"]
    # its layer plan reaches the checker: growing 1 -> 2 layers it builds what copy_top builds
    assert [d.code for d in result.diagnostics] == ["W0301"]  # the short probe, nothing else
    same = lagdsl.check_text(text.replace("depth=2", "depth=1").replace("by 2", "by 1"), "plugin.grow")
    assert [d.code for d in same.diagnostics] == ["W0202", "W0301"]


def test_a_plugin_appears_in_lagdsl_ops() -> None:
    env = {**os.environ, "PYTHONPATH": str(PLUGINS)}
    result = subprocess.run(
        [sys.executable, "-m", "lagdsl", "ops", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    names = {(e["name"], e["dim"]) for e in json.loads(result.stdout)}
    assert ("repeat_top", "depth") in names and ("copy_top", "depth") in names


def test_without_the_plugin_its_operator_is_unknown() -> None:
    result = CliRunner().invoke(main_cli(), ["ops", "--format", "json"])
    assert result.exit_code == 0, result.output
    names = {entry["name"] for entry in json.loads(result.stdout)}
    assert "copy_top" in names and "repeat_top" not in names


def main_cli():
    from lagdsl.cli import main

    return main


def test_initial_values_left_half_drawn_do_not_switch_gradients_off_later() -> None:
    """A sharded width growth draws the grown model's fresh values a tensor at a time, inside
    `no_grad`; the generator of them, collected after, must not restore the grad mode it saw then
    (training after such a growth once failed: no tensor required a gradient)."""
    import gc

    from lagdsl.model.gpt import initial_values

    with torch.no_grad():
        values = initial_values(GPTConfig(vocab=16, context=4, width=8, heads=2, depth=2))
        next(values)
    del values
    gc.collect()
    assert torch.is_grad_enabled()
