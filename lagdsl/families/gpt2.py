"""GPT-2 (`GPT2LMHeadModel`): learned absolute positions (`wpe`, `n_positions` rows) and no rotary
ones, LayerNorm with biases, biases on every projection, a GELU MLP (`activation_function`,
`gelu_new` by default: the tanh approximation) of `n_inner` units (4 x `n_embd` where null), the
head tied to the embedding. Its config names the sizes `n_embd`, `n_layer`, `n_head`, `n_positions`
and its weights are `Conv1D`s, stored transposed (in x out): `c_attn` holds q, k and v (as lagdsl's
`qkv`, transposed), `c_fc` the MLP's up projection. `scale_attn_by_inverse_layer_idx` (a scale per
layer) is refused; `reorder_and_upcast_attn` computes the same in float32."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from lagdsl.families.base import Arch, Family, FamilyError, transposed
from lagdsl.families.values import config_int
from lagdsl.lang.style import Style

LAYER = "transformer.h.{i}"
TENSORS: dict[str, tuple[str, ...]] = {
    "embed.weight": ("transformer.wte.weight",),
    "pos.weight": ("transformer.wpe.weight",),
    "norm.weight": ("transformer.ln_f.weight",),
    "norm.bias": ("transformer.ln_f.bias",),
    "lm_head.weight": ("lm_head.weight",),
    **{
        f"blocks.{{i}}.{ours}.{p}": (f"{LAYER}.{theirs}.{p}",)
        for ours, theirs in [
            ("norm1", "ln_1"), ("norm2", "ln_2"), ("attn.qkv", "attn.c_attn"), ("attn.o", "attn.c_proj"),
            ("mlp.up", "mlp.c_fc"), ("mlp.down", "mlp.c_proj"),
        ]
        for p in ("weight", "bias")
    },
}  # fmt: skip
CONV1D = ("attn.qkv", "attn.o", "mlp.up", "mlp.down")


def _read(config: Mapping[str, Any], arch: Arch) -> Arch:
    if config.get("scale_attn_by_inverse_layer_idx"):
        raise FamilyError(
            "`scale_attn_by_inverse_layer_idx: true` is not supported: lagdsl scales every layer's attention alike",
            "scale_attn_by_inverse_layer_idx",
        )
    if config.get("scale_attn_weights", True) is not True:
        raise FamilyError("`scale_attn_weights: false` is not supported", "scale_attn_weights")
    return replace(arch, style=replace(arch.style, positions=arch.context))


def _inner(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """GPT-2's config with `n_inner` given (null: 4 x `n_embd`, as transformers reads it)."""
    if config.get("n_inner") is None:
        return {**config, "n_inner": 4 * config_int(config, "n_embd")}
    return config


def _rewrite(out: dict[str, Any], source: Mapping[str, Any], arch: Arch) -> None:
    if source.get("n_inner") is None and arch.hidden == 4 * arch.width:
        out["n_inner"] = None  # (as it was: 4 x the width)
    out.pop("head_dim", None)


#: Llama's config keys -> this family's
KEYS = {
    "hidden_size": "n_embd",
    "num_hidden_layers": "n_layer",
    "num_attention_heads": "n_head",
    "intermediate_size": "n_inner",
    "max_position_embeddings": "n_positions",
    "rms_norm_eps": "layer_norm_epsilon",
    "num_key_value_heads": "",
    "hidden_act": "activation_function",
    }  # fmt: skip


FAMILY = Family(
    name="gpt2",
    architecture="GPT2LMHeadModel",
    model_type="gpt2",
    qkv_bias=True,
    tie_default=True,
    tensors=TENSORS,
    transforms={f"blocks.{{i}}.{name}.weight": transposed() for name in CONV1D},
    prepare=_inner,
    read_extra=_read,
    rewrite_extra=_rewrite,
    # no rotary positions: a learned table, of `n_positions` rows (`_read`; 1 holds its place here)
    style=Style(norm="layer", o_bias=True, mlp_bias=True, rotary=0.0, positions=1),
    keys=KEYS,
    activations={"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"},
    activation_default="gelu_new",
    eps_default=1e-5,
)
