"""Llama 2 and 3.x (and Llama-shaped checkpoints such as SmolLM2 and TinyLlama): the reference
family. Grouped-query attention, an explicit `head_dim`, a tied or untied head, Llama 3's RoPE
scaling; no biases."""

from lagdsl.families.base import Family

FAMILY = Family(name="llama", architecture="LlamaForCausalLM", model_type="llama", moe_sibling="mixtral")
