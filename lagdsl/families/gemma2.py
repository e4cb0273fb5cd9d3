"""Gemma 2 (`Gemma2ForCausalLM`): a norm before and after each sublayer (`input_layernorm`,
`post_attention_layernorm`, `pre_feedforward_layernorm`, `post_feedforward_layernorm`), each an
RMSNorm computing `(1 + weight)` (`Style.norm_offset`), a GeGLU
MLP (`hidden_activation`: tanh GELU), the embedding times sqrt(`hidden_size`) in the weights'
dtype, attention scores times `query_pre_attn_scalar ** -0.5` and capped (`attn_logit_softcapping`),
the logits capped (`final_logit_softcapping`), every other layer attending to the last
`sliding_window` positions (`layer_types`), computed as transformers does at any context; the head
tied. A config that leaves out `head_dim` or a cap has transformers' defaults (256, 50, 30)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from lagdsl.families.base import LLAMA_TENSORS, Arch, Family, FamilyError, config_window
from lagdsl.families.values import config_float
from lagdsl.lang.style import Style

LAYER = "model.layers.{i}"
TENSORS = {
    **LLAMA_TENSORS,
    "blocks.{i}.post1.weight": (f"{LAYER}.post_attention_layernorm.weight",),
    "blocks.{i}.norm2.weight": (f"{LAYER}.pre_feedforward_layernorm.weight",),
    "blocks.{i}.post2.weight": (f"{LAYER}.post_feedforward_layernorm.weight",),
    "blocks.{i}.attn.o.bias": (f"{LAYER}.self_attn.o_proj.bias",),
}
KINDS = ("sliding_attention", "full_attention")


def defaults(**values: Any) -> Any:
    """A `prepare` hook: the config with transformers' class defaults where it leaves keys out (an
    explicit null stays: no cap is no cap)."""

    def prepare(config: Mapping[str, Any]) -> Mapping[str, Any]:
        return {**values, **config}

    return prepare


def read_gemma(config: Mapping[str, Any], arch: Arch, pattern: int) -> Arch:
    """The style a Gemma config describes: softcaps, attention scale, and which layers slide (its
    `layer_types`, else every `pattern`-th layer attends to all, the others slide)."""
    if config.get("use_bidirectional_attention"):
        raise FamilyError("`use_bidirectional_attention: true` is not supported: lagdsl's attention is causal",
                          "use_bidirectional_attention")  # fmt: skip
    caps = {}
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        caps[key] = config_float(config, key) if config.get(key) is not None else None
    types = config.get("layer_types")
    if types is None:
        types = [KINDS[0] if (i + 1) % pattern else KINDS[1] for i in range(arch.depth)]
    if not isinstance(types, list) or len(types) != arch.depth or any(t not in KINDS for t in types):
        raise FamilyError(f"`layer_types` must list `sliding_attention` or `full_attention` for each of the "
                          f"{arch.depth} layers", "layer_types")  # fmt: skip
    local = tuple(i for i, kind in enumerate(types) if kind == KINDS[0])
    window = config_window(config) if local else None
    if local and window is None:
        raise FamilyError("`layer_types` has sliding layers and `sliding_window` is null", "sliding_window")
    style = replace(
        arch.style, attn_softcap=caps["attn_logit_softcapping"], final_softcap=caps["final_logit_softcapping"],
        attn_scale=config_float(config, "query_pre_attn_scalar"), window=window, local=local,
    )  # fmt: skip
    return replace(arch, style=style)


def _read(config: Mapping[str, Any], arch: Arch) -> Arch:
    return read_gemma(config, arch, pattern=2)


DEFAULTS = defaults(
    head_dim=256, query_pre_attn_scalar=256, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
    sliding_window=4096,
)  # fmt: skip

FAMILY = Family(
    name="gemma2",
    architecture="Gemma2ForCausalLM",
    model_type="gemma2",
    bias_key="attention_bias",
    tie_default=True,
    tensors=TENSORS,
    prepare=defaults(
        head_dim=256,
        query_pre_attn_scalar=256,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
        sliding_window=4096,
    ),
    read_extra=_read,
    style=Style(post_norm=True, embed_scale=True, norm_offset=True),
    keys={"hidden_act": "hidden_activation"},
    activations={"gelu_pytorch_tanh": "geglu"},
    activation_default="gelu_pytorch_tanh",
)
