"""Qwen2-MoE (`Qwen2MoeForCausalLM`, Qwen1.5-MoE): Qwen2's attention (q, k and v biases, unless
`qkv_bias` says otherwise), a mixture of experts in every layer with a shared expert beside the
routed ones, gated by a sigmoid (`shared_expert_intermediate_size`; 0 is a shared expert that adds
nothing, which is how a mixture without one goes out), `norm_topk_prob` false by default. A dense
Qwen2 upcycled exports as this."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from lagdsl.families.base import Arch, Experts, Family, FamilyError
from lagdsl.families.qwen2 import qwen2_moe_window

EXPERTS = Experts(
    experts_key="num_experts", hidden_key="moe_intermediate_size", prefix="mlp",
    names=("gate_proj", "up_proj", "down_proj"), renormalize_key="norm_topk_prob", shared=True,
    sparse_layers=True,
)  # fmt: skip


def _read(config: Mapping[str, Any], arch: Arch) -> Arch:
    bias = config.get("qkv_bias", True)
    if not isinstance(bias, bool):
        raise FamilyError("`qkv_bias` must be true or false", "qkv_bias")
    return qwen2_moe_window(config, replace(arch, qkv_bias=bias))


FAMILY = Family(
    name="qwen2_moe", architecture="Qwen2MoeForCausalLM", model_type="qwen2_moe", qkv_bias=True, read_extra=_read,
    experts=EXPERTS,
)  # fmt: skip
