"""Causal self-attention with grouped key/value heads, optional biases and q/k norms (per head or
over the whole projection), rotary positions on all or part of each head, a sliding window, an
attention scale and a softcap of the scores (`lagdsl.lang.style`), and a key/value cache for
generation. `F.scaled_dot_product_attention` computes it, except where the scores are capped or
dropped by row keys: then the weights are written out."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lagdsl.model.config import GPTConfig
from lagdsl.model.dropout import dropout as row_dropout
from lagdsl.model.kernels import rotary_qkv, rotate
from lagdsl.model.layers.norms import RMSNorm


@dataclass
class LayerCache:
    """One layer's cached keys and values (B, kv_heads, context, head_size) and how many positions
    of them are filled before the tokens a forward pass adds."""

    keys: torch.Tensor
    values: torch.Tensor
    start: int = 0


class Attention(nn.Module):
    """Causal self-attention of layer `index`. `qkv` holds the query, key and value projections
    stacked ((heads + 2 kv_heads) x head_size rows), so one matrix product computes all three;
    with `qk_norm` queries and keys are RMS-normalized (`q_norm`, `k_norm`: each head, or the whole
    projection) before the rotation, which turns the first `rotary` dimensions of each head."""

    def __init__(self, config: GPTConfig, index: int = 0) -> None:
        super().__init__()
        style, width = config.style, config.width
        self.heads, self.kv_heads, self.head_size = config.heads, config.key_value_heads, config.head_size
        self.dropout = config.dropout
        inner = self.heads * self.head_size
        self.qkv = nn.Linear(width, inner + 2 * self.kv_heads * self.head_size, bias=config.qkv_bias)
        self.o = nn.Linear(inner, width, bias=style.o_bias)
        self.whole = style.qk_norm_whole
        if config.qk_norm:
            q_size, k_size = (inner, self.kv_heads * self.head_size) if self.whole else (self.head_size,) * 2
            self.q_norm = RMSNorm(q_size, config.norm_eps, style.norm_offset)
            self.k_norm = RMSNorm(k_size, config.norm_eps, style.norm_offset)
        self.qk_norm = config.qk_norm
        self.rotary = style.rotary_size(self.head_size)
        self.window = style.window if style.slides(index) else None
        self.scale = style.attn_scale**-0.5 if style.attn_scale is not None else None
        self.softcap = style.attn_softcap

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        keys: torch.Tensor | None = None,
        site: int = 0,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        """`cos`, `sin`: the tables from `x`'s first position; `cache`: the positions before it,
        which this pass's keys and values are appended to."""
        batch, time, _ = x.shape
        q, k, v = self.project(self.qkv(x), cos, sin)
        start = 0
        if cache is not None:
            start = cache.start
            cache.keys[:, :, start : start + time] = k
            cache.values[:, :, start : start + time] = v
            k, v = cache.keys[:, :, : start + time], cache.values[:, :, : start + time]
        p = self.dropout if self.training else 0.0
        if self.softcap is not None or (p > 0.0 and keys is not None):
            y = self._written_out(q, k, v, start, p, keys, site)
        else:
            mask, causal = self._mask(time, start, x.device)
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=causal, dropout_p=p, scale=self.scale,
                enable_gqa=self.kv_heads != self.heads,
            )  # fmt: skip
        return self.o(y.transpose(1, 2).reshape(batch, time, -1))

    def allowed(self, time: int, start: int, device: torch.device) -> torch.Tensor:
        """(time, start + time): which keys each query sees (its own and earlier positions, within
        the window where this layer slides)."""
        query = torch.arange(start, start + time, device=device)[:, None]
        key = torch.arange(start + time, device=device)[None, :]
        seen = key <= query
        if self.window is not None:
            seen &= key > query - self.window
        return seen

    def _mask(self, time: int, start: int, device: torch.device) -> tuple[torch.Tensor | None, bool]:
        """SDPA's mask and causal flag: none where each query sees every key, causal from the
        start, else the mask written out."""
        length = start + time
        if self.window is None or length <= self.window:  # (within the window every earlier key is in it)
            if time == 1:
                return None, False
            if start == 0:
                return None, True
        return self.allowed(time, start, device), False

    def _written_out(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int, p: float, keys: torch.Tensor | None,
        site: int,
    ) -> torch.Tensor:  # fmt: skip
        """Attention with the weights written out: capped scores (Gemma 2's `c tanh(s / c)`) and
        dropout by row keys, which SDPA cannot do."""
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        if self.scale is None:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_size)
        else:
            scores = (q @ k.transpose(-2, -1)) * self.scale
        if self.softcap is not None:
            scores = torch.tanh(scores / self.softcap) * self.softcap
        seen = self.allowed(q.shape[2], start, q.device)
        weights = scores.masked_fill(~seen, float("-inf")).softmax(dim=-1, dtype=torch.float32).to(q.dtype)
        if p > 0.0 and keys is not None:
            weights = row_dropout(weights, p, keys, site)
        return weights @ v

    def project(
        self, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k (normalized where the family does, rotated) and v, each (B, heads, T, D), from the
        `qkv` projection's output (B, T, rows); `cos` and `sin` start at its first position."""
        batch, time, _ = qkv.shape
        size = self.head_size
        if self.kv_heads == self.heads and not self.qk_norm and self.rotary == size:  # the fused kernel's case
            return rotary_qkv(qkv.view(batch, time, 3, self.heads, size), cos, sin)
        q, k, v = qkv.split([self.heads * size, self.kv_heads * size, self.kv_heads * size], dim=-1)
        if self.qk_norm and self.whole:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.view(batch, time, self.heads, size), k.view(batch, time, self.kv_heads, size)
        if self.qk_norm and not self.whole:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self._rotate(q, cos, sin), self._rotate(k, cos, sin)
        return q.transpose(1, 2), k.transpose(1, 2), v.view(batch, time, self.kv_heads, size).transpose(1, 2)

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """The first `rotary` dimensions of each head rotated, the rest as they are."""
        if self.rotary == self.head_size:
            return rotate(x, cos, sin)
        if self.rotary == 0:
            return x
        return torch.cat((rotate(x[..., : self.rotary], cos, sin), x[..., self.rotary :]), dim=-1)
