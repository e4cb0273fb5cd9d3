"""Mistral: Llama's tensors, plus a `sliding_window` on every layer (4096 in v0.1, null later),
computed as transformers computes it at any context."""

from __future__ import annotations

from lagdsl.families.base import Family, slides_everywhere

FAMILY = Family(
    name="mistral", architecture="MistralForCausalLM", model_type="mistral", read_extra=slides_everywhere,
    moe_sibling="mixtral",
)  # fmt: skip
