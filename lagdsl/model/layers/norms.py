"""Norms: RMSNorm (every Llama-shaped family's, and Gemma's whose gain is `1 + weight`) and
LayerNorm with a bias (GPT-2, GPT-NeoX); `norm(config, width)` builds the family's."""

from __future__ import annotations

import torch
from torch import nn

from lagdsl.model.config import GPTConfig
from lagdsl.model.kernels import rms_norm


class RMSNorm(nn.Module):
    """RMSNorm with the gain `weight`, or (`offset`, Gemma's) `1 + weight`, computed in float32."""

    def __init__(self, width: int, eps: float, offset: bool = False) -> None:
        super().__init__()
        self.eps, self.offset = eps, offset
        self.weight = nn.Parameter(torch.zeros(width) if offset else torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.offset:  # in float32, as Gemma computes it, whatever the weights are held in
            return rms_norm(x.float(), 1.0 + self.weight.float(), self.eps).to(x.dtype)
        return rms_norm(x, self.weight, self.eps)


def norm(config: GPTConfig, width: int | None = None) -> nn.Module:
    """The family's norm over `width` (default the model's): RMSNorm, or LayerNorm with a bias."""
    width = width if width is not None else config.width
    if config.style.norm == "layer":
        return nn.LayerNorm(width, config.norm_eps)
    return RMSNorm(width, config.norm_eps, config.style.norm_offset)
