"""The `gpt` model: a decoder-only Transformer in the LLaMA family, built to be grown.

Pre-norm RMSNorm, rotary position embeddings, a SwiGLU MLP (or GELU), no biases, input and output
embeddings tied, `F.scaled_dot_product_attention`. Blocks sit in a `ModuleDict` keyed by `str(i)`
so growth can insert and renumber them; `init_weights(generator)` is separate from `__init__` so a
grown model can be built without paying for an initialization it then overwrites. Its sizes come
from `lagdsl.lang.arch`, the same arithmetic the plan's cost model uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from lagdsl.lang.arch import mlp_hidden
from lagdsl.model.kernels import rms_norm, rotary_qkv, swiglu

if TYPE_CHECKING:
    from lagdsl.lang.schedule import Schedule, Shape

INIT_STD = 0.02


@dataclass(frozen=True)
class GPTConfig:
    """The model's shape and fixed choices; `head_size` never changes as the model grows."""

    vocab: int
    context: int
    width: int
    heads: int
    depth: int
    mlp: str = "swiglu"
    dropout: float = 0.0
    #: RMSNorm's epsilon. Width growth that adds zero dimensions (`zero`) scales it by w / w' and
    #: the norm gains by sqrt(w / w'), which keeps every norm's output exactly as it was.
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")

    @property
    def head_size(self) -> int:
        return self.width // self.heads

    @property
    def hidden(self) -> int:
        return mlp_hidden(self.width, self.mlp)

    def grown(self, *, depth: int | None = None, width: int | None = None) -> GPTConfig:
        """The same model at another depth or width (heads follow width; the head size stays)."""
        width = width if width is not None else self.width
        if width % self.head_size:
            raise ValueError(f"width {width} is not a multiple of the head size {self.head_size}")
        depth = depth if depth is not None else self.depth
        return replace(self, depth=depth, width=width, heads=width // self.head_size)

    @classmethod
    def from_schedule(cls, schedule: Schedule, shape: Shape | None = None) -> GPTConfig:
        """The config of a `Schedule`'s model, at `shape` (default: the initial shape)."""
        model = schedule.model
        shape = shape or model.shape
        return cls(model.vocab, model.context, shape.width, shape.heads, shape.depth, model.mlp, model.dropout)


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def rotary_tables(context: int, head_size: int, base: float = 10_000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, (context, head_size / 2) each."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)
    angles = torch.outer(torch.arange(context, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


class Attention(nn.Module):
    """Causal self-attention. `qkv` holds the query, key and value projections stacked (3w x w),
    so one matrix product computes all three."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        width = config.width
        self.heads, self.head_size, self.dropout = config.heads, config.head_size, config.dropout
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.o = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, time, width = x.shape
        q, k, v = rotary_qkv(self.qkv(x).view(batch, time, 3, self.heads, self.head_size), cos, sin)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        return self.o(y.transpose(1, 2).reshape(batch, time, width))


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


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.norm1 = RMSNorm(config.width, config.norm_eps)
        self.attn = Attention(config)
        self.norm2 = RMSNorm(config.width, config.norm_eps)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm1(x), cos, sin))
        return x + self.dropout(self.mlp(self.norm2(x)))

    def residual_outputs(self) -> list[nn.Linear]:
        """The projections that write into the residual stream."""
        return [self.attn.o, self.mlp.down]


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab, config.width)
        self.blocks = nn.ModuleDict({str(i): Block(config) for i in range(config.depth)})
        self.norm = RMSNorm(config.width, config.norm_eps)
        self.lm_head = nn.Linear(config.width, config.vocab, bias=False)
        self.lm_head.weight = self.embed.weight  # tied
        cos, sin = rotary_tables(config.context, config.head_size)
        self.register_buffer("rotary_cos", cos, persistent=False)
        self.register_buffer("rotary_sin", sin, persistent=False)

    # -- initialization

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Normal(0, 0.02) weights, residual output projections scaled by 1/sqrt(2 x depth)
        (GPT-2), unit norm gains. Draws from `generator` in a fixed order."""
        residual_std = INIT_STD / math.sqrt(2 * self.config.depth)
        with torch.no_grad():
            nn.init.normal_(self.embed.weight, 0.0, INIT_STD, generator=generator)
            for i in range(self.config.depth):
                init_block(self.block(i), residual_std, generator)
            self.norm.weight.fill_(1.0)

    def block(self, i: int) -> Block:
        """Block `i` (0 is the lowest)."""
        block = self.blocks[str(i)]
        assert isinstance(block, Block)
        return block

    # -- use

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab) and, given targets, the mean cross-entropy loss."""
        x = self.embed(idx)
        for i in range(len(self.blocks)):
            x = self.blocks[str(i)](x, self.rotary_cos, self.rotary_sin)
        logits = self.lm_head(self.norm(x))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Decay for matrices (the tied embedding included), none for norm gains."""
        decay = [p for p in self.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.dim() < 2]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def init_block(block: Block, residual_std: float, generator: torch.Generator | None) -> None:
    with torch.no_grad():
        for param in block.parameters():
            if param.dim() == 1:
                param.fill_(1.0)
            else:
                nn.init.normal_(param, 0.0, INIT_STD, generator=generator)
        for linear in block.residual_outputs():
            nn.init.normal_(linear.weight, 0.0, residual_std, generator=generator)
