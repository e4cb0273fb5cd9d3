"""Qwen3-MoE (`Qwen3MoeForCausalLM`): Qwen3's attention (q/k norms, an explicit `head_dim`), a
mixture of experts in every layer, `norm_topk_prob` renormalizing the top-k weights (false by
default; the released checkpoints set it), no shared expert. A dense Qwen3 upcycled exports as this."""

from collections.abc import Mapping
from typing import Any

from lagdsl.families.base import Arch, Experts, Family, config_window, sliding

EXPERTS = Experts(
    experts_key="num_experts", hidden_key="moe_intermediate_size", prefix="mlp",
    names=("gate_proj", "up_proj", "down_proj"), renormalize_key="norm_topk_prob", sparse_layers=True,
)  # fmt: skip


def _window(config: Mapping[str, Any], arch: Arch) -> Arch:
    """With `use_sliding_window`, every layer slides (transformers 5's Qwen3-MoE)."""
    return sliding(arch, config_window(config, "use_sliding_window"))


FAMILY = Family(
    name="qwen3_moe", architecture="Qwen3MoeForCausalLM", model_type="qwen3_moe", qk_norm=True,
    read_extra=_window, experts=EXPERTS,
)  # fmt: skip
