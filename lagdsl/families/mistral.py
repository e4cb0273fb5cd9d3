"""Mistral: Llama's tensors, plus a `sliding_window` (4096 in v0.1, null later). A window at least
as long as the context changes nothing; a shorter one is refused by the checker (lagdsl attends
over the whole context)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lagdsl.families.base import Arch, Family, with_window


def _window(config: Mapping[str, Any], arch: Arch) -> Arch:
    return with_window(arch, config.get("sliding_window"), "sliding_window")


FAMILY = Family(
    name="mistral", architecture="MistralForCausalLM", model_type="mistral", read_extra=_window, moe_sibling="mixtral"
)
