"""OLMo 2 (`Olmo2ForCausalLM`): Llama's tensors and SwiGLU, but the norms come after each sublayer,
before the residual add (`post_attention_layernorm`, `post_feedforward_layernorm`; no norm before
them), and the q and k RMSNorms are over the whole projection (all heads at once), before the
rotation. `attention_bias` puts a bias on q, k, v and o; the head is untied."""

from __future__ import annotations

from lagdsl.families.base import LLAMA_TENSORS, Family
from lagdsl.lang.style import Style

LAYER = "model.layers.{i}"
TENSORS = {
    **{k: v for k, v in LLAMA_TENSORS.items() if ".norm1." not in k and ".norm2." not in k},
    "blocks.{i}.post1.weight": (f"{LAYER}.post_attention_layernorm.weight",),
    "blocks.{i}.post2.weight": (f"{LAYER}.post_feedforward_layernorm.weight",),
    "blocks.{i}.attn.o.bias": (f"{LAYER}.self_attn.o_proj.bias",),
}

FAMILY = Family(
    name="olmo2",
    architecture="Olmo2ForCausalLM",
    model_type="olmo2",
    bias_key="attention_bias",
    qk_norm=True,
    tensors=TENSORS,
    style=Style(pre_norm=False, post_norm=True, qk_norm_whole=True),
    eps_default=1e-5,
)
