"""The model: a decoder-only Transformer in the LLaMA family, built to be grown.

Pre-norm RMSNorm, rotary position embeddings, a SwiGLU MLP (or GELU), `F.scaled_dot_product_attention`.
One config holds the few things that differ between the decoder families people grow (litgpt's
`Config` is the model): key/value heads fewer than the query heads (grouped-query attention), an
explicit head size and MLP size, a tied or untied output head, the rotary base and Llama 3's
scaling, biases on q, k and v (Qwen2), and an RMSNorm of each query and key head (Qwen3). A `gpt`
model from scratch has none of them: one key/value head per head, tied, base 10,000, no biases.

Blocks sit in a `ModuleDict` keyed by `str(i)` so growth can insert and renumber them;
`init_weights(generator)` is separate from `__init__` so a grown or imported model can be built
without paying for an initialization it then overwrites. Its sizes come from `lagdsl.lang.arch`,
the same arithmetic the plan's cost model uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lagdsl.lang.arch import grown_heads, grown_mlp, mlp_hidden
from lagdsl.model.dropout import dropout as row_dropout
from lagdsl.model.kernels import rms_norm, rotary_qkv, rotate, swiglu

if TYPE_CHECKING:
    from lagdsl.lang.schedule import Schedule, Shape

INIT_STD = 0.02

#: Llama 3's RoPE scaling: (factor, low frequency factor, high frequency factor, original context)
RopeScaling = tuple[float, float, float, int]


@dataclass(frozen=True)
class GPTConfig:
    """The model's shape and fixed choices; the head size never changes as the model grows."""

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
    kv_heads: int | None = None  # None: one per head
    head_dim: int | None = None  # the attention head size; None: width / heads
    ffn: int | None = None  # the MLP's hidden size; None: the `gpt` formula of the width
    tie: bool = True  # the output head is the input embedding
    rope_theta: float = 10_000.0
    rope_scaling: RopeScaling | None = None
    qkv_bias: bool = False
    qk_norm: bool = False

    def __post_init__(self) -> None:
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, tuple):  # read back from JSON
            object.__setattr__(self, "rope_scaling", tuple(self.rope_scaling))
        if self.head_dim is None and self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.heads % self.key_value_heads:
            raise ValueError(f"heads {self.heads} is not a multiple of kv_heads {self.key_value_heads}")

    @property
    def head_size(self) -> int:
        return self.head_dim if self.head_dim is not None else self.width // self.heads

    @property
    def key_value_heads(self) -> int:
        return self.kv_heads if self.kv_heads is not None else self.heads

    @property
    def hidden(self) -> int:
        return self.ffn if self.ffn is not None else mlp_hidden(self.width, self.mlp)

    def grown(self, *, depth: int | None = None, width: int | None = None) -> GPTConfig:
        """The same model at another depth or width: heads and key/value heads grow with the width
        (the head size stays), an explicit MLP size in proportion (`lagdsl.lang.arch`)."""
        depth = depth if depth is not None else self.depth
        if width is None or width == self.width:
            return replace(self, depth=depth)
        per_head = self.width // self.heads
        if width % (per_head * (self.heads // self.key_value_heads)):
            raise ValueError(f"width {width} is not a multiple of the width of a group of heads")
        heads = grown_heads(self.heads, self.width, width)
        kv_heads = grown_heads(self.kv_heads, self.width, width) if self.kv_heads is not None else None
        ffn = grown_mlp(self.ffn, self.width, width) if self.ffn is not None else None
        return replace(self, depth=depth, width=width, heads=heads, kv_heads=kv_heads, ffn=ffn)

    @classmethod
    def from_schedule(cls, schedule: Schedule, shape: Shape | None = None) -> GPTConfig:
        """The config of a `Schedule`'s model, at `shape` (default: the initial shape)."""
        model = schedule.model
        shape = shape or model.shape
        scaling = model.rope_scaling
        return cls(
            model.vocab, model.context, shape.width, shape.heads, shape.depth, model.mlp, model.dropout,
            norm_eps=model.norm_eps, kv_heads=shape.kv_heads, head_dim=model.head_dim, ffn=shape.hidden,
            tie=model.tie, rope_theta=model.rope_theta, qkv_bias=model.qkv_bias, qk_norm=model.qk_norm,
            rope_scaling=(
                None if scaling is None
                else (scaling.factor, scaling.low_freq_factor, scaling.high_freq_factor, scaling.original_context)
            ),
        )  # fmt: skip


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


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

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor | None = None, site: int = 0
    ) -> torch.Tensor:
        """`keys`: a dropout key per row (`lagdsl.model.dropout`); `site`: this block's first of 3."""
        if keys is None or not self.training or self.dropout.p == 0.0:
            x = x + self.dropout(self.attn(self.norm1(x), cos, sin))
            return x + self.dropout(self.mlp(self.norm2(x)))
        p = self.dropout.p
        x = x + row_dropout(self.attn(self.norm1(x), cos, sin, keys, site), p, keys, site + 1)
        return x + row_dropout(self.mlp(self.norm2(x)), p, keys, site + 2)

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
        if config.tie:
            self.lm_head.weight = self.embed.weight
        #: recompute each block's activations in the backward pass (`activations recompute`); the
        #: engine sets it on every model it trains, a grown one too
        self.recompute = False
        self.register_buffer("rotary_cos", torch.empty(0), persistent=False)
        self.register_buffer("rotary_sin", torch.empty(0), persistent=False)
        self.init_buffers()

    @classmethod
    def empty(cls, config: GPTConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> GPT:
        """A model whose weights are allocated and not initialized (for a caller that writes every
        one: an import, a growth that copies every unit), built without paying for an
        initialization; a tied head is the embedding."""
        with torch.device("meta"):
            model = cls(config)
        model.to_empty(device=device)
        if config.tie:  # `to_empty` gives each module a tensor of its own: tie them again
            model.lm_head.weight = model.embed.weight
        model.to(dtype)
        model.init_buffers()
        return model

    def init_buffers(self) -> None:
        """The rotary tables, on the device of the weights (after `to_empty`, which leaves them unset)."""
        config = self.config
        cos, sin = rotary_tables(config.context, config.head_size, config.rope_theta, config.rope_scaling)
        device = self.embed.weight.device
        self.rotary_cos, self.rotary_sin = cos.to(device), sin.to(device)

    # -- initialization

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Normal(0, 0.02) weights, residual output projections scaled by 1/sqrt(2 x depth)
        (GPT-2), unit norm gains, zero biases. Draws from `generator` in a fixed order."""
        params = dict(self.named_parameters())
        with torch.no_grad():
            for name, value in initial_values(self.config, generator):
                params[name].copy_(value)

    def block(self, i: int) -> Block:
        """Block `i` (0 is the lowest)."""
        block = self.blocks[str(i)]
        assert isinstance(block, Block)
        return block

    # -- use

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, keys: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab) and, given targets, the mean cross-entropy loss. `keys`: a dropout
        key per row (`lagdsl.model.dropout.row_keys`), so that masks follow the global row."""
        x = self.embed(idx)
        recompute = self.recompute and self.training and torch.is_grad_enabled()
        for i in range(len(self.blocks)):
            block = self.blocks[str(i)]
            if recompute:  # only the block's input is kept; its forward runs again in the backward pass
                x = checkpoint(block, x, self.rotary_cos, self.rotary_sin, keys, 3 * i, use_reentrant=False)
            else:
                x = block(x, self.rotary_cos, self.rotary_sin, keys, 3 * i)
        logits = self.lm_head(self.norm(x))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def param_groups(self, weight_decay: float, scales: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
        """Decay for matrices (the embedding and output head included), none for norm gains and
        biases; the trainable parameters only. With `scales` (an LR multiplier by parameter name,
        1 where not given), a pair of groups per multiplier, each group's in its `lr_scale`."""
        scales = scales or {}
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        groups = []
        for scale in sorted({1.0, *scales.values()}, reverse=True):
            mine = [p for n, p in named if scales.get(n, 1.0) == scale]
            for matrices, decay in ((True, weight_decay), (False, 0.0)):
                params = [p for p in mine if (p.dim() >= 2) == matrices]
                if params:  # no empty groups (the distributed state-dict helpers refuse several)
                    group: dict[str, Any] = {"params": params, "weight_decay": decay}
                    if scale != 1.0:
                        group["lr_scale"] = scale
                    groups.append(group)
        return groups or [{"params": [], "weight_decay": 0.0}]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def initial_values(config: GPTConfig, generator: torch.Generator | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Each parameter's initial value (`GPT.init_weights`), whole, on the CPU, drawn in a fixed
    order, one tensor or block at a time (a sharded model keeps each rank's rows of each).

    No yield stands inside a grad-mode context: a generator left suspended and collected later
    would restore the mode it saw on entry, in whatever code runs then."""
    embed = torch.empty(config.vocab, config.width)
    yield "embed.weight", nn.init.normal_(embed, 0.0, INIT_STD, generator=generator)
    residual_std = INIT_STD / math.sqrt(2 * config.depth)
    for i in range(config.depth):
        block = Block(config)
        init_block(block, residual_std, generator)
        for name, param in block.named_parameters():
            yield f"blocks.{i}.{name}", param.detach()
        del block, param  # one block whole at a time
    yield "norm.weight", torch.ones(config.width)
    if not config.tie:
        head = torch.empty(config.vocab, config.width)
        yield "lm_head.weight", nn.init.normal_(head, 0.0, INIT_STD, generator=generator)


def init_block(block: Block, residual_std: float, generator: torch.Generator | None) -> None:
    with torch.no_grad():
        for name, param in block.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif param.dim() == 1:
                param.fill_(1.0)
            else:
                nn.init.normal_(param, 0.0, INIT_STD, generator=generator)
        for linear in block.residual_outputs():
            nn.init.normal_(linear.weight, 0.0, residual_std, generator=generator)
