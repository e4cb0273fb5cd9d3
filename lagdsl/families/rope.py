"""A config's rotary positions in and out: every `rope_type` transformers implements for these
families, read as transformers 5 reads it (`read_rope`), and written in both spellings (`rope_keys`).
No torch here."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lagdsl.families.values import FamilyError, config_float, config_int
from lagdsl.lang.rope import ROPE_TYPES, Rope, longrope_attention, yarn_mscale


def read_partial(config: Mapping[str, Any], key: str = "partial_rotary_factor", default: float = 1.0) -> float:
    """The share of each head that rotates: `partial_rotary_factor` in the RoPE object, else the
    config's (under `key`: GPT-NeoX's `rotary_pct`), else the family's `default`."""
    params = config.get("rope_scaling") or config.get("rope_parameters") or {}
    params = params if isinstance(params, dict) else {}  # (what else it is, `read_rope` refuses)
    where = "rope_parameters" if "partial_rotary_factor" in params else key
    value = params.get("partial_rotary_factor", config.get(key, default))
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 1:
        raise FamilyError(f"`{where}` must be a share of the head in (0, 1], found `{json.dumps(value)[:40]}`", where)
    return float(value)


def read_rope(
    config: Mapping[str, Any], head_dim: int, default_theta: float, *, theta_key: str = "rope_theta",
    layer_type: str | None = None,
) -> tuple[float, Rope | None]:  # fmt: skip
    """The rotary base and scaling as transformers 5 reads them: `rope_scaling` (transformers 4's
    spelling) where it is set, else `rope_parameters`; the base from that object, else the
    config's `rope_theta` (`theta_key`: GPT-NeoX's `rotary_emb_base`), else the family's default.
    Every `rope_type` transformers implements for these families is read, each parameter's default
    resolved as transformers resolves it. `head_dim`: the dimensions that rotate; `layer_type`: the
    layers' kind whose object a `rope_parameters` per layer type holds (Gemma 3's)."""
    for key in ("rope_parameters", "rope_scaling"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise FamilyError(f"`{key}` must be an object such as {{\"rope_type\": \"default\"}}, found "
                              f"`{json.dumps(config[key])[:60]}`", key)  # fmt: skip
    key = "rope_scaling" if config.get("rope_scaling") else "rope_parameters"
    params = dict(config.get(key) or {})
    nested = [k for k, v in params.items() if isinstance(v, dict)]
    if nested and layer_type is not None and key == "rope_parameters":
        params = dict(params.get(layer_type) or {})
    elif nested:
        raise FamilyError(f"`{key}` per layer type (`{nested[0]}`) is not supported: one RoPE for every layer", key)
    theta = config_float(params, "rope_theta", config_float(config, theta_key, default_theta))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind not in ROPE_TYPES:
        raise FamilyError(
            f"RoPE type `{kind}` is not supported: lagdsl reads {', '.join(map('`{}`'.format, ROPE_TYPES))}", key
        )
    required = {
        "linear": ["factor"], "dynamic": ["factor"], "yarn": ["factor"], "longrope": ["short_factor", "long_factor"],
        "llama3": ["factor", "low_freq_factor", "high_freq_factor"],
    }[kind]  # fmt: skip
    missing = [k for k in required if k not in params]
    if missing:  # transformers refuses such a config: lagdsl invents no defaults for it
        raise FamilyError(f"RoPE type `{kind}` needs {', '.join(f'`{k}`' for k in missing)} in `{key}`", key)
    context = config_int(config, "max_position_embeddings")
    original = config_int(config, "original_max_position_embeddings", None) or config_int(
        params, "original_max_position_embeddings", context
    )  # (a top-level key, Phi-3's, wins as in transformers)
    if kind == "dynamic":  # transformers' threshold is the config's own length
        return theta, Rope(kind, config_float(params, "factor", within=key), context)
    if kind == "linear":
        return theta, Rope(kind, config_float(params, "factor", within=key))
    if kind == "llama3":
        low, high = (config_float(params, k, within=key) for k in ("low_freq_factor", "high_freq_factor"))
        rope = Rope(kind, config_float(params, "factor", within=key), original, low, high)
        if rope.low_freq_factor >= rope.high_freq_factor:
            raise FamilyError("`low_freq_factor` must be smaller than `high_freq_factor`", key)
        return theta, rope
    factor = context / original if params.get("factor") is None else config_float(params, "factor", within=key)
    attention = params.get("attention_factor")
    if attention is not None:
        attention = config_float(params, "attention_factor", within=key)
    if kind == "yarn":
        mscale, mscale_all = params.get("mscale"), params.get("mscale_all_dim")
        if attention is None and mscale and mscale_all:
            attention = yarn_mscale(factor, config_float(params, "mscale", within=key)) / yarn_mscale(
                factor, config_float(params, "mscale_all_dim", within=key)
            )
        truncate = params.get("truncate", True)
        if not isinstance(truncate, bool):
            raise FamilyError("`truncate` must be true or false", key)
        fast, slow = float(params.get("beta_fast") or 32), float(params.get("beta_slow") or 1)
        attention = yarn_mscale(factor) if attention is None else attention
        return theta, Rope(
            kind, factor, original, beta_fast=fast, beta_slow=slow, truncate=truncate, attention_factor=attention
        )
    lists = []
    for name in ("short_factor", "long_factor"):
        values = params[name]
        if (
            not isinstance(values, list)
            or len(values) != head_dim // 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in values)
        ):
            raise FamilyError(f"`{name}` must be a list of {head_dim // 2} positive numbers (one per frequency)", key)
        lists.append(tuple(float(v) for v in values))
    attention = longrope_attention(factor, original) if attention is None else attention
    return theta, Rope(kind, factor, original, attention_factor=attention, short_factor=lists[0], long_factor=lists[1])


def rope_keys(theta: float, rope: Rope | None) -> dict[str, Any]:
    """A config's RoPE keys in transformers 5's spelling (`rope_parameters`) and transformers 4's
    (`rope_theta`, `rope_scaling`), which both read back as the same method."""
    parameters = (rope or Rope()).parameters(theta)
    scaling = None if rope is None else {k: v for k, v in parameters.items() if k != "rope_theta"}
    return {"rope_theta": theta, "rope_scaling": scaling, "rope_parameters": parameters}
