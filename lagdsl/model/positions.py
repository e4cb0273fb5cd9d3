"""Positions: the rotary tables (RoPE) a model's attention rotates its queries and keys by, with
every scaling transformers implements (`lagdsl.lang.rope.Rope`: linear, dynamic NTK, YaRN,
LongRoPE, Llama 3), computed as `transformers.modeling_rope_utils` computes them, operation for
operation, so that an imported model's logits are transformers' within float32 rounding."""

from __future__ import annotations

import math

import torch

from lagdsl.lang.rope import Rope


def inverse_frequencies(head_size: int, base: float, rope: Rope | None = None, length: int = 0) -> torch.Tensor:
    """The rotary frequencies, (head_size / 2,) in float32; `length`: the sequence's length, which
    `dynamic` and `longrope` read beyond `rope.original` positions."""
    dim = head_size
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    kind = rope.kind if rope is not None else "default"
    if rope is None or kind in ("default", "linear"):
        inv_freq = 1.0 / (base**exponents)
        if kind == "linear":
            assert rope is not None
            inv_freq /= rope.factor
        return inv_freq
    if kind == "dynamic":  # the base raised at the sequence's length, from `original` positions on
        seq_len = torch.maximum(torch.tensor(length), torch.tensor(rope.original))
        grown = base * ((rope.factor * seq_len / rope.original) - (rope.factor - 1)) ** (dim / (dim - 2))
        return 1.0 / (grown**exponents)
    if kind == "longrope":
        factors = rope.long_factor if length > rope.original else rope.short_factor
        return 1.0 / (torch.tensor(factors, dtype=torch.float32) * base**exponents)
    if kind == "yarn":
        return _yarn(dim, base, rope)
    return _llama3(1.0 / (base**exponents), rope)


def attention_scaling(rope: Rope | None) -> float:
    """What cos and sin are multiplied by (YaRN's and LongRoPE's attention factor; 1 otherwise)."""
    return rope.attention_factor if rope is not None and rope.kind in ("yarn", "longrope") else 1.0


def rotary_tables(
    context: int, head_size: int, base: float = 10_000.0, rope: Rope | None = None, length: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles of positions 0 .. context - 1, (context, head_size / 2)
    each; `length`: the sequence's length where the method reads it (`Rope.by_length`)."""
    inv_freq = inverse_frequencies(head_size, base, rope, length)
    angles = torch.outer(torch.arange(context, dtype=torch.float32), inv_freq)
    scaling = attention_scaling(rope)
    if scaling == 1.0:
        return angles.cos(), angles.sin()
    return angles.cos() * scaling, angles.sin() * scaling


def _yarn(dim: int, base: float, rope: Rope) -> torch.Tensor:
    def correction_dim(rotations: float) -> float:  # the dimension that turns `rotations` times in `original` positions
        return (dim * math.log(rope.original / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(rope.beta_fast), correction_dim(rope.beta_slow)
    if rope.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # (transformers' guard against a zero-width ramp)
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2).to(dtype=torch.float) / dim)
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (rope.factor * pos_freqs)
    kept = 1 - ramp  # the share of each frequency extrapolated (kept as it was)
    return interpolation * (1 - kept) + extrapolation * kept


def _llama3(inv_freq: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Long wavelengths divided by the factor, short ones kept, a smooth blend between."""
    factor, low, high, original = rope.factor, rope.low_freq_factor, rope.high_freq_factor, rope.original
    wavelength = 2 * math.pi / inv_freq
    scaled = torch.where(wavelength > original / low, inv_freq / factor, inv_freq)
    smooth = (original / wavelength - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelength < original / high) * ~(wavelength > original / low)
    return torch.where(medium, blended, scaled)
