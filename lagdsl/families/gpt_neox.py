"""GPT-NeoX (`GPTNeoXForCausalLM`: Pythia, GPT-NeoX-20B): LayerNorm with biases, attention and MLP
read the same input and add to the stream together (`use_parallel_residual`, true by default; false
is the sequential block), a quarter of each head rotated (`rotary_pct`, base `rotary_emb_base`),
biases on every projection (`attention_bias` for the attention's, always on the MLP's), a GELU MLP
(`hidden_act`), an untied head `embed_out`. Its `query_key_value` holds each head's q, k and v
together (head 0's q, k, v, then head 1's, ...), which lagdsl holds as all q, then all k, then all v."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from lagdsl.families.base import Arch, Family, FamilyError, Transform
from lagdsl.lang.style import Style

LAYER = "gpt_neox.layers.{i}"
TENSORS: dict[str, tuple[str, ...]] = {
    "embed.weight": ("gpt_neox.embed_in.weight",),
    "norm.weight": ("gpt_neox.final_layer_norm.weight",),
    "norm.bias": ("gpt_neox.final_layer_norm.bias",),
    "lm_head.weight": ("embed_out.weight",),
    **{
        f"blocks.{{i}}.{ours}.{p}": (f"{LAYER}.{theirs}.{p}",)
        for ours, theirs in [
            ("norm1", "input_layernorm"), ("norm2", "post_attention_layernorm"),
            ("attn.qkv", "attention.query_key_value"), ("attn.o", "attention.dense"),
            ("mlp.up", "mlp.dense_h_to_4h"), ("mlp.down", "mlp.dense_4h_to_h"),
        ]
        for p in ("weight", "bias")
    },
}  # fmt: skip


def _qkv(t: Any, arch: Arch, inward: bool) -> Any:
    """Rows of q, k and v per head (GPT-NeoX's) to all q, all k, all v (lagdsl's), or back."""
    grouped = (arch.heads, 3) if inward else (3, arch.heads)
    return t.reshape(*grouped, arch.head_dim, *t.shape[1:]).transpose(0, 1).reshape(t.shape)


QKV = Transform(lambda t, arch: _qkv(t, arch, True), lambda t, arch: _qkv(t, arch, False))


def _read(config: Mapping[str, Any], arch: Arch) -> Arch:
    parallel = config.get("use_parallel_residual", True)
    if not isinstance(parallel, bool):
        raise FamilyError("`use_parallel_residual` must be true or false", "use_parallel_residual")
    return replace(arch, style=replace(arch.style, parallel=parallel))


#: Llama's config keys -> this family's
KEYS = {
    "rms_norm_eps": "layer_norm_eps", "num_key_value_heads": "", "rope_theta": "rotary_emb_base",
    "partial_rotary_factor": "rotary_pct",
}  # fmt: skip


FAMILY = Family(
    name="gpt_neox",
    architecture="GPTNeoXForCausalLM",
    model_type="gpt_neox",
    bias_key="attention_bias",
    bias_default=True,
    tensors=TENSORS,
    transforms={"blocks.{i}.attn.qkv.weight": QKV, "blocks.{i}.attn.qkv.bias": QKV},
    read_extra=_read,
    style=Style(norm="layer", mlp_bias=True, rotary=0.25),  # (the share rotated where the config says none)
    keys=KEYS,
    activations={"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"},
    activation_default="gelu",
    eps_default=1e-5,
    partial_rotary=True,
)
