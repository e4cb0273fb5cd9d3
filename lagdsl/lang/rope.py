"""Rotary positions: how a model's RoPE frequencies are scaled, in transformers' terms (its
`rope_type`s and their parameters). No torch here: the checker reads a checkpoint's method, the
model (`lagdsl.model.positions`) computes the tables from it.

- `default`: the frequencies θ_i = base^(-2i/d) as they are;
- `linear`: all divided by `factor` (position interpolation, arXiv 2306.15595);
- `dynamic`: beyond `original` positions, the base raised by (f T / original - (f - 1))^(d / (d - 2))
  at the sequence's length T (dynamic NTK);
- `yarn`: low frequencies divided by `factor`, high ones kept, a linear ramp between (`beta_fast`,
  `beta_slow`), cos and sin times the attention factor (arXiv 2309.00071);
- `longrope`: each divided by its `short_factor`, or its `long_factor` beyond `original` positions,
  cos and sin times the attention factor (LongRoPE, Phi-3);
- `llama3`: long wavelengths divided by `factor`, short ones kept, a smooth blend between.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: the methods lagdsl computes, as transformers names them
ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")


@dataclass(frozen=True)
class Rope:
    """A model's rotary scaling (the base is the model's `rope_theta`). `original`: the context the
    frequencies were trained at (`original_max_position_embeddings`; `dynamic`'s and `longrope`'s
    threshold); `attention_factor`: what cos and sin are multiplied by (YaRN's and LongRoPE's,
    resolved from their defaults when read)."""

    kind: str = "default"
    factor: float = 1.0
    original: int = 0
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    beta_fast: float = 32.0  # yarn
    beta_slow: float = 1.0  # yarn
    truncate: bool = True  # yarn: the ramp's ends rounded outwards to whole dimensions
    attention_factor: float = 1.0  # yarn, longrope
    short_factor: tuple[float, ...] = field(default=())  # longrope, one per frequency
    long_factor: tuple[float, ...] = field(default=())  # longrope

    def __post_init__(self) -> None:
        if self.kind not in ROPE_TYPES:
            raise ValueError(f"RoPE type `{self.kind}` is not one of {', '.join(ROPE_TYPES)}")
        for name in ("short_factor", "long_factor"):  # (lists, read back from JSON)
            object.__setattr__(self, name, tuple(float(x) for x in getattr(self, name)))

    @property
    def by_length(self) -> bool:
        """Whether the tables depend on the sequence's length (beyond `original` positions)."""
        return self.kind in ("dynamic", "longrope")

    def parameters(self, theta: float) -> dict[str, object]:
        """transformers' `rope_parameters` for this method with base `theta` (what `rope_scaling`
        holds too, for transformers 4)."""
        out: dict[str, object] = {"rope_type": self.kind, "rope_theta": theta}
        if self.kind == "default":
            return out
        out["factor"] = self.factor
        if self.kind in ("yarn", "longrope", "llama3"):
            out["original_max_position_embeddings"] = self.original
        if self.kind == "llama3":
            out.update(low_freq_factor=self.low_freq_factor, high_freq_factor=self.high_freq_factor)
        if self.kind == "yarn":
            out.update(beta_fast=self.beta_fast, beta_slow=self.beta_slow, truncate=self.truncate)
        if self.kind in ("yarn", "longrope"):
            out["attention_factor"] = self.attention_factor
        if self.kind == "longrope":
            out.update(short_factor=list(self.short_factor), long_factor=list(self.long_factor))
        return out


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature (its Eq. 21, as transformers computes it): 0.1 m ln(s) + 1."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def longrope_attention(factor: float, original: int) -> float:
    """LongRoPE's default attention factor: sqrt(1 + ln(f) / ln(original)) (1 for f <= 1)."""
    return 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
