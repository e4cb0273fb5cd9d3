"""Qwen2 and Qwen2.5: q, k and v projections always carry biases (no config key says so), `o_proj`
none; a sliding window (`use_sliding_window`, `sliding_window`) on the layers `layer_types` names,
else on those from `max_window_layers` up, computed at any context; small sizes tie the embeddings."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from lagdsl.families.base import Arch, Family, FamilyError, config_window

SLIDING, FULL = "sliding_attention", "full_attention"


def qwen_window(config: Mapping[str, Any], arch: Arch) -> Arch:
    """Qwen2's and Qwen3's sliding layers, as transformers 5 computes them: with
    `use_sliding_window`, the window `sliding_window` on the layers `layer_types` names sliding,
    else on those from `max_window_layers` up (transformers 4 took `max_window_layers` whatever
    `layer_types` says; configs on the Hub turn the window off)."""
    window = config_window(config, "use_sliding_window")  # (transformers sets it aside without)
    return _layers(config, arch, window, lambda i, first: window is not None and i >= first)


def qwen2_moe_window(config: Mapping[str, Any], arch: Arch) -> Arch:
    """Qwen2-MoE's sliding layers (transformers 5): where `layer_types` gives none, every other
    layer (0, 2, ...) below `max_window_layers`, with `use_sliding_window`."""
    window = config_window(config, "use_sliding_window")  # (transformers sets it aside without)
    return _layers(config, arch, window, lambda i, first: window is not None and (i + 1) % 2 == 1 and i < first)


def _layers(config: Mapping[str, Any], arch: Arch, window: int | None, slides: Callable[[int, int], bool]) -> Arch:
    """`arch` whose layers that `layer_types` (else `slides(i, max_window_layers)`) names sliding
    attend to the last `window` positions."""
    first = config.get("max_window_layers", 28)
    if not isinstance(first, int) or isinstance(first, bool) or first < 0:
        raise FamilyError(f"`max_window_layers` must be a count, found `{first}`", "max_window_layers")
    types = config.get("layer_types")
    if types is None:
        types = [SLIDING if slides(i, first) else FULL for i in range(arch.depth)]
    if not isinstance(types, list) or len(types) != arch.depth or any(t not in (SLIDING, FULL) for t in types):
        raise FamilyError(f"`layer_types` must list `{SLIDING}` or `{FULL}` for each of the {arch.depth} layers",
                          "layer_types")  # fmt: skip
    local = tuple(i for i, kind in enumerate(types) if kind == SLIDING)
    if not local:
        return arch
    if window is None:  # (transformers fails on such a config)
        raise FamilyError("`layer_types` names sliding layers and `use_sliding_window` is off: no window to slide by",
                          "use_sliding_window")  # fmt: skip
    return replace(arch, style=replace(arch.style, window=window, local=local))


FAMILY = Family(
    name="qwen2",
    architecture="Qwen2ForCausalLM",
    model_type="qwen2",
    qkv_bias=True,
    read_extra=qwen_window,
    moe_sibling="qwen2_moe",
)
