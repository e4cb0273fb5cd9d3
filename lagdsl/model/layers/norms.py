"""Norms: RMSNorm (the pre-norms of every block, the final norm and the q/k norms of Qwen3)."""

from __future__ import annotations

import torch
from torch import nn

from lagdsl.model.kernels import rms_norm


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)
