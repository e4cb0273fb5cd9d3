"""The MLP of a block: gated (SwiGLU: the LLaMA families'; GeGLU: Gemma's, with tanh GELU) or
plain (GELU, exact or tanh: GPT-2, GPT-NeoX), with biases where the family has them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lagdsl.lang.arch import GATED
from lagdsl.model.config import GPTConfig
from lagdsl.model.kernels import swiglu


class MLP(nn.Module):
    """Gated (`gate_up` holds the gate and up projections stacked, 2h x w) or plain (`up`, h x w);
    `down` w x h; biases on each where `config.style.mlp_bias`."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.kind = config.mlp
        bias = config.style.mlp_bias
        if self.kind in GATED:
            self.gate_up = nn.Linear(config.width, 2 * config.hidden, bias=bias)
        else:
            self.up = nn.Linear(config.width, config.hidden, bias=bias)
        self.down = nn.Linear(config.hidden, config.width, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            return self.down(swiglu(self.gate_up(x)))
        if self.kind == "geglu":
            gate, up = self.gate_up(x).chunk(2, dim=-1)
            return self.down(F.gelu(gate, approximate="tanh") * up)
        return self.down(F.gelu(self.up(x), approximate="tanh" if self.kind == "gelu_tanh" else "none"))
