"""Mistral: Llama's tensors, plus a `sliding_window` on every layer (4096 in v0.1, null later),
computed as transformers computes it at any context."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lagdsl.families.base import Arch, Family, sliding


def _window(config: Mapping[str, Any], arch: Arch) -> Arch:
    return sliding(arch, config.get("sliding_window"), "sliding_window")


FAMILY = Family(
    name="mistral", architecture="MistralForCausalLM", model_type="mistral", read_extra=_window, moe_sibling="mixtral"
)
