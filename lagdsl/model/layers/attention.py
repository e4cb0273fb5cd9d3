"""Causal self-attention with grouped key/value heads, optional q/k/v biases and q/k norms, rotary
positions and `F.scaled_dot_product_attention` (dropout by row keys where the weights are written
out)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lagdsl.model.config import GPTConfig
from lagdsl.model.dropout import dropout as row_dropout
from lagdsl.model.kernels import rotary_qkv, rotate
from lagdsl.model.layers.norms import RMSNorm


class Attention(nn.Module):
    """Causal self-attention. `qkv` holds the query, key and value projections stacked
    ((heads + 2 kv_heads) x head_size rows), so one matrix product computes all three; with
    `qk_norm` each query and key head is RMS-normalized (`q_norm`, `k_norm`) before the rotation."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        width = config.width
        self.heads, self.kv_heads, self.head_size = config.heads, config.key_value_heads, config.head_size
        self.dropout = config.dropout
        inner = self.heads * self.head_size
        self.qkv = nn.Linear(width, inner + 2 * self.kv_heads * self.head_size, bias=config.qkv_bias)
        self.o = nn.Linear(inner, width, bias=False)
        if config.qk_norm:
            self.q_norm = RMSNorm(self.head_size, config.norm_eps)
            self.k_norm = RMSNorm(self.head_size, config.norm_eps)
        self.qk_norm = config.qk_norm

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor | None = None, site: int = 0
    ) -> torch.Tensor:
        batch, time, _ = x.shape
        q, k, v = self.project(self.qkv(x), cos, sin)
        p = self.dropout if self.training else 0.0
        grouped = self.kv_heads != self.heads
        if p > 0.0 and keys is not None:  # the attention weights written out, to drop them by row keys
            if grouped:
                k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
                v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_size)
            causal = torch.ones(time, time, dtype=torch.bool, device=x.device).tril()
            weights = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
            y = row_dropout(weights, p, keys, site) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p, enable_gqa=grouped)
        return self.o(y.transpose(1, 2).reshape(batch, time, -1))

    def project(
        self, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k (normalized where the family does, rotated) and v, each (B, heads, T, D), from the
        `qkv` projection's output (B, T, rows); `cos` and `sin` start at its first position."""
        batch, time, _ = qkv.shape
        size = self.head_size
        if self.kv_heads == self.heads and not self.qk_norm:  # the fused kernel's case
            return rotary_qkv(qkv.view(batch, time, 3, self.heads, size), cos, sin)
        q, k, v = qkv.split([self.heads * size, self.kv_heads * size, self.kv_heads * size], dim=-1)
        q, k = q.view(batch, time, self.heads, size), k.view(batch, time, self.kv_heads, size)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        return q.transpose(1, 2), k.transpose(1, 2), v.view(batch, time, self.kv_heads, size).transpose(1, 2)
