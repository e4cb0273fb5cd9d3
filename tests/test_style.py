"""The model's family knobs (`lagdsl.lang.style`), each against a direct computation.

`reference` below is a second, plain implementation of the block written from the families'
papers and transformers' modeling files (LayerNorm, post- and sandwich norms, parallel residual,
q/k norms per head and over the whole projection, partial rotary, learned positions, biases,
embedding scale, softcaps, attention scale, sliding windows with a local rotary base, the MLPs);
the model must compute what it computes for each knob alone and for the families' combinations.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lagdsl.lang import layers
from lagdsl.lang.arch import param_count
from lagdsl.lang.style import Style
from lagdsl.model.config import GPTConfig
from lagdsl.model.generate import Generator
from lagdsl.model.gpt import GPT

BASE = GPTConfig(vocab=61, context=24, width=32, heads=4, depth=3, kv_heads=2, ffn=48, tie=False, norm_eps=1e-5)


def _norm(module: torch.nn.Module, x: torch.Tensor, style: Style, eps: float) -> torch.Tensor:
    weight = module.weight
    if style.norm == "layer":
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + eps) * weight + module.bias
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight


def _rotate(x: torch.Tensor, theta: float, rotary: int) -> torch.Tensor:
    """x (T, H, D): the first `rotary` dimensions of each head rotated by position, halves paired."""
    if rotary == 0:
        return x
    time = x.shape[0]
    inv = 1.0 / theta ** (torch.arange(0, rotary, 2).float() / rotary)
    angles = torch.arange(time).float()[:, None] * inv[None, :]
    cos, sin = angles.cos()[:, None, :], angles.sin()[:, None, :]
    half = rotary // 2
    a, b, rest = x[..., :half], x[..., half:rotary], x[..., rotary:]
    return torch.cat((a * cos - b * sin, b * cos + a * sin, rest), dim=-1)


def _attention(model: GPT, i: int, x: torch.Tensor) -> torch.Tensor:
    config, style = model.config, model.config.style
    attn = model.block(i).attn
    heads, groups, size = config.heads, config.key_value_heads, config.head_size
    time = x.shape[0]
    out = x @ attn.qkv.weight.T + (attn.qkv.bias if attn.qkv.bias is not None else 0)
    q, k, v = out.split([heads * size, groups * size, groups * size], dim=-1)
    eps = config.norm_eps
    rms = Style()
    if config.qk_norm and style.qk_norm_whole:
        q, k = _norm(attn.q_norm, q, rms, eps), _norm(attn.k_norm, k, rms, eps)
    q, k, v = q.view(time, heads, size), k.view(time, groups, size), v.view(time, groups, size)
    if config.qk_norm and not style.qk_norm_whole:
        q, k = _norm(attn.q_norm, q, rms, eps), _norm(attn.k_norm, k, rms, eps)
    local = i in style.local
    theta = style.local_theta if local and style.local_theta is not None else config.rope_theta
    rotary = int(size * style.rotary)
    q, k = _rotate(q, theta, rotary), _rotate(k, theta, rotary)
    k, v = k.repeat_interleave(heads // groups, dim=1), v.repeat_interleave(heads // groups, dim=1)
    scale = style.attn_scale**-0.5 if style.attn_scale is not None else 1 / math.sqrt(size)
    scores = torch.einsum("qhd,khd->hqk", q, k) * scale
    if style.attn_softcap is not None:
        scores = style.attn_softcap * torch.tanh(scores / style.attn_softcap)
    query, key = torch.arange(time)[:, None], torch.arange(time)[None, :]
    seen = key <= query
    if local:
        seen &= query - key < style.window
    weights = scores.masked_fill(~seen, float("-inf")).softmax(-1)
    y = torch.einsum("hqk,khd->qhd", weights, v).reshape(time, heads * size)
    return y @ attn.o.weight.T + (attn.o.bias if attn.o.bias is not None else 0)


def _mlp(model: GPT, i: int, x: torch.Tensor) -> torch.Tensor:
    mlp, kind = model.block(i).mlp, model.config.mlp

    def linear(layer: torch.nn.Linear, h: torch.Tensor) -> torch.Tensor:
        return h @ layer.weight.T + (layer.bias if layer.bias is not None else 0)

    if kind in ("swiglu", "geglu"):
        gate, up = linear(mlp.gate_up, x).chunk(2, dim=-1)
        act = gate * torch.sigmoid(gate) if kind == "swiglu" else _gelu_tanh(gate)
        return linear(mlp.down, act * up)
    h = linear(mlp.up, x)
    act = _gelu_tanh(h) if kind == "gelu_tanh" else 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    return linear(mlp.down, act)


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:  # GPT-2's `gelu_new`
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def reference(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The logits of one sequence `idx` (T,), computed directly from the parameters."""
    config, style = model.config, model.config.style
    eps = config.norm_eps
    x = model.embed.weight[idx]
    if style.embed_scale:
        x = x * math.sqrt(config.width)
    if style.positions:
        x = x + model.pos.weight[: len(idx)]
    for i in range(config.depth):
        block = model.block(i)
        a = _attention(model, i, _norm(block.norm1, x, style, eps) if style.pre_norm else x)
        if style.post_norm:
            a = _norm(block.post1, a, style, eps)
        if style.parallel:
            x = x + a + _mlp(model, i, _norm(block.norm2, x, style, eps))
            continue
        x = x + a
        m = _mlp(model, i, _norm(block.norm2, x, style, eps) if style.pre_norm else x)
        if style.post_norm:
            m = _norm(block.post2, m, style, eps)
        x = x + m
    logits = _norm(model.norm, x, style, eps) @ model.lm_head.weight.T
    if style.final_softcap is not None:
        logits = style.final_softcap * torch.tanh(logits / style.final_softcap)
    return logits


def _random_model(config: GPTConfig, seed: int = 0) -> GPT:
    """A model whose every parameter (norm gains and biases too) is random, so no knob hides."""
    torch.manual_seed(seed)
    model = GPT(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight") or ".norm" in name or ".post" in name or "_norm" in name:
                param.copy_(1 + 0.3 * torch.randn_like(param))
            else:
                param.copy_(0.3 * torch.randn_like(param))
    return model.eval()


KNOBS = {
    "default": ({}, {}),
    "layer_norm": ({"norm": "layer"}, {}),
    "post_norm": ({"pre_norm": False, "post_norm": True}, {}),
    "sandwich": ({"post_norm": True}, {}),
    "parallel": ({"parallel": True}, {}),
    "qk_norm_head": ({}, {"qk_norm": True}),
    "qk_norm_whole": ({"qk_norm_whole": True}, {"qk_norm": True}),
    "partial_rotary": ({"rotary": 0.25}, {}),
    "learned_positions": ({"positions": 32, "rotary": 0.0}, {}),
    "biases": ({"o_bias": True, "mlp_bias": True}, {"qkv_bias": True}),
    "embed_scale": ({"embed_scale": True}, {}),
    "attn_softcap": ({"attn_softcap": 2.0}, {}),
    "final_softcap": ({"final_softcap": 3.0}, {}),
    "attn_scale": ({"attn_scale": 11.0}, {}),
    "window": ({"window": 5, "local": (0, 2)}, {}),
    "local_theta": ({"window": 5, "local": (1,), "local_theta": 77.0}, {"rope_theta": 1e6}),
    "gelu": ({}, {"mlp": "gelu"}),
    "gelu_tanh": ({"mlp_bias": True}, {"mlp": "gelu_tanh"}),
    "geglu": ({}, {"mlp": "geglu"}),
}

FAMILIES = {
    "gpt2": ({"norm": "layer", "positions": 32, "rotary": 0.0, "o_bias": True, "mlp_bias": True},
             {"qkv_bias": True, "mlp": "gelu_tanh", "kv_heads": None, "tie": True}),
    "gpt_neox": ({"norm": "layer", "parallel": True, "rotary": 0.25, "o_bias": True, "mlp_bias": True},
                 {"qkv_bias": True, "mlp": "gelu", "kv_heads": None}),
    "olmo2": ({"pre_norm": False, "post_norm": True, "qk_norm_whole": True}, {"qk_norm": True}),
    "gemma2": ({"post_norm": True, "embed_scale": True, "attn_softcap": 5.0, "final_softcap": 4.0,
                "attn_scale": 16.0, "window": 6, "local": (0, 2)}, {"mlp": "geglu", "tie": True}),
    "gemma3": ({"post_norm": True, "embed_scale": True, "attn_scale": 16.0, "window": 6, "local": (0, 1),
                "local_theta": 10_000.0}, {"mlp": "geglu", "qk_norm": True, "rope_theta": 1e6, "tie": True}),
}  # fmt: skip


def _config(style: dict, fields: dict) -> GPTConfig:
    return replace(BASE, style=Style(**style), **fields)


@pytest.mark.parametrize("name", [*KNOBS, *FAMILIES])
def test_each_knob_computes_what_the_direct_computation_does(name: str) -> None:
    style, fields = KNOBS.get(name) or FAMILIES[name]
    model = _random_model(_config(style, fields))
    idx = torch.randint(0, BASE.vocab, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, _ = model(idx)
        for row in range(2):
            torch.testing.assert_close(logits[row], reference(model, idx[row]), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["gpt2", "gpt_neox", "gemma2", "gemma3", "window"])
def test_generation_with_the_cache_equals_the_whole_sequence(name: str) -> None:
    """Cached generation past the window, with capped scores and learned positions, sees what a
    forward pass over the whole sequence sees."""
    style, fields = KNOBS.get(name) or FAMILIES[name]
    model = _random_model(_config(style, fields), seed=3)
    prompt = [5, 9, 2]
    tokens = list(Generator(model).stream(prompt, 14))
    sequence = prompt + tokens
    with torch.no_grad():
        logits, _ = model(torch.tensor([sequence[:-1]]))
    assert logits[0, len(prompt) - 1 :].argmax(-1).tolist() == tokens


def test_a_block_with_zero_residual_projections_is_the_identity_in_every_arrangement() -> None:
    for name in ["biases", "post_norm", "sandwich", "parallel", "gpt2", "gpt_neox", "olmo2", "gemma2"]:
        style, fields = KNOBS.get(name) or FAMILIES[name]
        model = _random_model(_config(style, fields))
        block = model.block(1)
        with torch.no_grad():
            for weight in block.residual_outputs():
                weight.zero_()
            x = torch.randn(2, 7, BASE.width)
            cos, sin = model.tables(7)[1]
            assert torch.equal(block(x, cos, sin), x), name


def test_the_default_style_builds_the_model_it_built_before() -> None:
    """A `gpt` model has no new parameter, and its block is pre-norm RMSNorm without biases."""
    names = [name for name, _ in GPT(BASE).named_parameters()]
    assert names == [
        "embed.weight",
        *[f"blocks.{i}.{n}" for i in range(3) for n in ("norm1.weight", "attn.qkv.weight", "attn.o.weight",
                                                         "norm2.weight", "mlp.gate_up.weight", "mlp.down.weight")],
        "norm.weight", "lm_head.weight",
    ]  # fmt: skip


@pytest.mark.parametrize("name", [*KNOBS, *FAMILIES])
def test_the_parameter_count_is_the_models(name: str) -> None:
    style, fields = KNOBS.get(name) or FAMILIES[name]
    config = _config(style, fields)
    count = param_count(
        vocab=config.vocab, width=config.width, depth=config.depth, mlp=config.mlp, heads=config.heads,
        kv_heads=config.key_value_heads, head_dim=config.head_size, hidden=config.hidden, tie=config.tie,
        qkv_bias=config.qkv_bias, qk_norm=config.qk_norm, style=config.style,
    )  # fmt: skip
    assert count.total == GPT(config).num_params()


def test_a_copied_layer_attends_as_its_source() -> None:
    """Depth growth carries each layer's attention kind (Gemma 3's `layer_types`): a copy as its
    source, a fresh layer as the one below it."""
    config = _config({"window": 4, "local": (0, 1)}, {})
    grown = config.restacked(layers.positions(layers.interleave(3, 2)))
    assert grown.depth == 5
    plan = layers.positions(layers.interleave(3, 2))
    assert grown.style.local == tuple(i for i, layer in enumerate(plan) if layer.source in (0, 1))
    assert config.restacked(layers.positions(layers.on_top(3, 2))).style.local == (0, 1)


def test_styles_that_describe_no_block_are_refused() -> None:
    with pytest.raises(ValueError, match="norm before or after"):
        Style(pre_norm=False)
    with pytest.raises(ValueError, match="parallel"):
        Style(parallel=True, post_norm=True)
    with pytest.raises(ValueError, match="window"):
        Style(local=(0,))
    with pytest.raises(ValueError, match="learned positions"):
        replace(BASE, style=Style(positions=8, rotary=0.0))


def test_a_layernorm_model_from_scratch_trains_grows_by_hyperclone_and_is_refused_by_llama_export(
    tmp_path: Path,
) -> None:
    """`gpt(norm=layer)`: every norm a LayerNorm with a bias, through a run, a width growth that
    keeps its function, and an export that says no family here holds it."""
    import json

    from click.testing import CliRunner

    from lagdsl.cli import main
    from lagdsl.runtime.state.trained import open_trained

    (tmp_path / "ln.grow").write_text(
        "schedule ln\nmodel gpt(context=32, width=32, heads=4, depth=2, norm=layer)\nbatch 4\n"
        "optimizer adamw(lr=3e-3)\nstage base { train 3 steps }\n"
        "stage wider {\n  grow width to 64 with hyperclone(noise=0)\n  train 2 steps\n}\n",
        encoding="utf-8",
    )
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--quiet", str(tmp_path / "ln.grow"), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    model = open_trained(run_dir).model()
    assert model.config.width == 64 and isinstance(model.block(0).norm1, torch.nn.LayerNorm)
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["after"]["width"] for e in events if e["event"] == "grow"] == [64]
    exported = CliRunner().invoke(main, ["export", str(run_dir), "-o", str(tmp_path / "hf")])
    assert exported.exit_code == 2
    assert exported.stderr.strip() == "error: a model with `norm=layer` has no LlamaForCausalLM equivalent"


@pytest.mark.parametrize("offset", [False, True])
def test_a_fresh_block_starts_with_unit_gains_in_every_norm(offset: bool) -> None:
    """Every norm of a fresh block (before, after, q/k) starts as the identity's gain: a weight of
    1, or of 0 where the gain is `1 + weight` (Gemma's)."""
    from lagdsl.model.gpt import INIT_STD, Block, init_block

    config = _config({"post_norm": True, "norm_offset": offset}, {"qk_norm": True})
    block = Block(config, 0)
    init_block(block, INIT_STD, torch.Generator().manual_seed(0))
    gains = {n: p for n, p in block.named_parameters() if p.dim() == 1}
    assert set(gains) == {f"{n}.weight" for n in ("norm1", "post1", "norm2", "post2", "attn.q_norm", "attn.k_norm")}
    for name, gain in gains.items():
        assert torch.equal(gain, torch.full_like(gain, 0.0 if offset else 1.0)), name
