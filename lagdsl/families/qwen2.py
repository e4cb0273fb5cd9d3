"""Qwen2 and Qwen2.5: q, k and v projections always carry biases (no config key says so), `o_proj`
none; a sliding window (`use_sliding_window`, `sliding_window`) on the layers from
`max_window_layers` up; small sizes tie the embeddings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lagdsl.families.base import Arch, Family, with_window


def qwen_window(config: Mapping[str, Any], arch: Arch) -> Arch:
    """The sliding window of the Qwen families, where some layer uses it: by transformers 4's rule
    (the layers from `max_window_layers` up) or by transformers 5's (`layer_types` naming
    `sliding_attention`), which can disagree; either is enough (the checker refuses a window
    shorter than the context, and within it the window changes nothing)."""
    if not config.get("use_sliding_window"):
        return arch  # no window in either version, whatever `layer_types` says
    first = config.get("max_window_layers", 0)
    types = config.get("layer_types")
    by_types = isinstance(types, list) and "sliding_attention" in types
    if isinstance(first, int) and first >= arch.depth and not by_types:
        return arch  # no layer at or above `max_window_layers`, none named sliding
    return with_window(arch, config.get("sliding_window"), "sliding_window")


FAMILY = Family(
    name="qwen2",
    architecture="Qwen2ForCausalLM",
    model_type="qwen2",
    qkv_bias=True,
    read_extra=qwen_window,
    moe_sibling="qwen2_moe",
)
