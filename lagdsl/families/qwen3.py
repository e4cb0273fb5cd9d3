"""Qwen3 (dense): no q/k/v biases (`attention_bias` would put one on `o_proj` too, and is refused),
an RMSNorm over each query and key head before the rotation (`q_norm`, `k_norm`), an explicit
`head_dim`, `layer_types`; 0.6B and 4B tie the embeddings, 8B does not."""

from lagdsl.families.base import Family
from lagdsl.families.qwen2 import qwen_window

FAMILY = Family(
    name="qwen3",
    architecture="Qwen3ForCausalLM",
    model_type="qwen3",
    qk_norm=True,
    read_extra=qwen_window,
    moe_sibling="qwen3_moe",
)
