"""Gemma 3, text (`Gemma3ForCausalLM`, model type `gemma3_text`): Gemma 2's block (sandwich norms
of `(1 + weight)`, GeGLU, the embedding scale, `query_pre_attn_scalar`) with an RMSNorm of each
query and key head (`(1 + weight)` too) and no caps by default; five layers in six slide
(`layer_types`, else `sliding_window_pattern`), and they rotate with a base of their own
(`rope_parameters` per layer type in transformers 5, `rope_local_base_freq` before; 10,000 by
default) while the full-attention layers take the model's (10^6 by default, with its scaling)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from lagdsl.families.base import Arch, Family, FamilyError
from lagdsl.families.gemma2 import TENSORS, defaults, read_gemma
from lagdsl.families.rope import read_rope
from lagdsl.families.values import config_int
from lagdsl.lang.style import Style

LOCAL_THETA = 10_000.0


def _read(config: Mapping[str, Any], arch: Arch) -> Arch:
    arch = read_gemma(config, arch, pattern=config_int(config, "sliding_window_pattern", 6))
    params = config.get("rope_parameters")
    if isinstance(params, dict) and isinstance(params.get("sliding_attention"), dict):
        theta, rope = read_rope(config, arch.style.rotary_size(arch.head_dim), LOCAL_THETA,
                                theta_key="rope_local_base_freq", layer_type="sliding_attention")  # fmt: skip
    else:
        theta, rope = float(config.get("rope_local_base_freq") or LOCAL_THETA), None
    if rope is not None:
        raise FamilyError(f"a RoPE of type `{rope.kind}` on the sliding layers is not supported", "rope_parameters")
    return replace(arch, style=replace(arch.style, local_theta=theta))


def _rewrite(out: dict[str, Any], source: Mapping[str, Any], arch: Arch) -> None:
    """Rotary keys the growth rewrote, per layer type as transformers 5 writes Gemma 3's."""
    params = out.get("rope_parameters")
    if isinstance(params, dict) and "rope_type" in params:
        local = {"rope_type": "default", "rope_theta": arch.style.local_theta or LOCAL_THETA}
        out["rope_parameters"] = {"full_attention": params, "sliding_attention": local}


FAMILY = Family(
    name="gemma3",
    architecture="Gemma3ForCausalLM",
    model_type="gemma3_text",
    bias_key="attention_bias",
    qk_norm=True,
    tie_default=True,
    tensors=TENSORS,
    prepare=defaults(head_dim=256, query_pre_attn_scalar=256, sliding_window=4096),
    read_extra=_read,
    rewrite_extra=_rewrite,
    style=Style(post_norm=True, embed_scale=True, norm_offset=True),
    keys={"hidden_act": "hidden_activation"},
    activations={"gelu_pytorch_tanh": "geglu"},
    activation_default="gelu_pytorch_tanh",
    default_theta=1_000_000.0,
    rope_layer="full_attention",
)
