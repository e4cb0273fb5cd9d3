"""Phi-3 and Phi-4-mini (`Phi3ForCausalLM`): Llama's block with q, k and v in one projection
(`qkv_proj`, q rows then k then v, as lagdsl holds them) and the gate and up projections in one
(`gate_up_proj`, gate rows then up), no biases, an untied head; part of each head may rotate
(`partial_rotary_factor`: Phi-4-mini's 0.75); LongRoPE's scaling (`longrope`, which its configs
also call `su` or `yarn`: transformers reads both as LongRoPE) with a top-level
`original_max_position_embeddings`; a `sliding_window` on every layer (Phi-3-mini's 2047), which
lagdsl computes as transformers does. transformers' Phi-3 knows no other RoPE type, so a context
grown by another method (`pi`, `yarn`, ...) does not export as Phi-3."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lagdsl.families.base import LLAMA_TENSORS, Arch, Family, FamilyError, slides_everywhere

LAYER = "model.layers.{i}"
TENSORS = {
    **LLAMA_TENSORS,
    "blocks.{i}.attn.qkv.weight": (f"{LAYER}.self_attn.qkv_proj.weight",),
    "blocks.{i}.mlp.gate_up.weight": (f"{LAYER}.mlp.gate_up_proj.weight",),
}
ROPE_KEYS = ("rope_scaling", "rope_parameters")


def _longrope(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The config as transformers' Phi-3 reads it: RoPE types `su` and `yarn` are LongRoPE."""
    out = dict(config)
    for key in ROPE_KEYS:
        params = out.get(key)
        if isinstance(params, dict) and params.get("rope_type", params.get("type")) in ("su", "yarn"):
            out[key] = {**params, "rope_type": "longrope"}
            out[key].pop("type", None)
    return out


def _read(config: Mapping[str, Any], arch: Arch) -> Arch:
    if arch.rope_scaling is not None and arch.rope_scaling.kind != "longrope":
        raise FamilyError(f"RoPE type `{arch.rope_scaling.kind}` is not Phi-3's: it reads `default` and `longrope`",
                          "rope_parameters")  # fmt: skip
    return slides_everywhere(config, arch)


FAMILY = Family(
    name="phi3",
    architecture="Phi3ForCausalLM",
    model_type="phi3",
    qkv_bias=False,
    tensors=TENSORS,
    prepare=_longrope,
    read_extra=_read,
    eps_default=1e-5,
    partial_rotary=True,
    rope_types=("default", "longrope"),
)
