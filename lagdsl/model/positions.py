"""Positions: the rotary tables (RoPE) a model's attention rotates its queries and keys by, and
their scalings (Llama 3's), as `transformers` computes them."""

from __future__ import annotations

import math

import torch

from lagdsl.model.config import RopeScaling


def rotary_tables(
    context: int, head_size: int, base: float = 10_000.0, scaling: RopeScaling | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, (context, head_size / 2) each; with Llama 3's `scaling`
    (as `transformers` computes it: long wavelengths divided by the factor, short ones kept, a
    smooth blend between)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_size, 2, dtype=torch.int64).float() / head_size)
    if scaling is not None:
        factor, low, high, original = scaling
        wavelength = 2 * math.pi / inv_freq
        scaled = torch.where(wavelength > original / low, inv_freq / factor, inv_freq)
        smooth = (original / wavelength - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelength < original / high) * ~(wavelength > original / low)
        inv_freq = torch.where(medium, blended, scaled)
    angles = torch.outer(torch.arange(context, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()
