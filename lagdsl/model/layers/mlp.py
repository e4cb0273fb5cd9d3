"""The MLP of a block: SwiGLU (the LLaMA families') or GELU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lagdsl.model.config import GPTConfig
from lagdsl.model.kernels import swiglu


class MLP(nn.Module):
    """SwiGLU (`gate_up` holds the gate and up projections stacked, 2h x w) or GELU (`up`, h x w)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.kind = config.mlp
        if self.kind == "swiglu":
            self.gate_up = nn.Linear(config.width, 2 * config.hidden, bias=False)
        else:
            self.up = nn.Linear(config.width, config.hidden, bias=False)
        self.down = nn.Linear(config.hidden, config.width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            return self.down(swiglu(self.gate_up(x)))
        return self.down(F.gelu(self.up(x)))
