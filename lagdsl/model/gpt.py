"""The model: a decoder-only Transformer, built to be grown.

Blocks (`Block`: norm, attention, norm, MLP, each added to the residual stream), rotary positions,
an embedding, a final norm and an output head tied to the embedding or not. What a family changes
is a field of the config (`lagdsl.model.config`), above all of its style (`lagdsl.lang.style`:
LayerNorm, post-norms, parallel blocks, partial rotary, learned positions, biases, softcaps,
sliding windows), never a test of the family's name; the parts live where their
names say: `lagdsl.model.layers` (norms, attention, MLPs), `lagdsl.model.positions` (rotary
tables). Weights are fp32 unless the run holds the model in bf16 (`pretrained(..., dtype=bf16)`).

Blocks sit in a `ModuleDict` keyed by `str(i)` so growth can insert and renumber them;
`init_weights(generator)` is separate from `__init__` so a grown or imported model can be built
without paying for an initialization it then overwrites.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lagdsl.lang.rope import Rope
from lagdsl.model.config import GPTConfig
from lagdsl.model.dropout import dropout as row_dropout
from lagdsl.model.layers.attention import Attention, LayerCache
from lagdsl.model.layers.mlp import MLP
from lagdsl.model.layers.moe import MoE, Routing, load_shares
from lagdsl.model.layers.norms import RMSNorm, norm
from lagdsl.model.positions import rotary_tables

__all__ = ["GPT", "MLP", "Attention", "Block", "GPTConfig", "RMSNorm", "Rope", "initial_values", "rotary_tables"]

INIT_STD = 0.02


class Block(nn.Module):
    """Block `index` of a model of `config` (its MLP a mixture of experts where `config.mixed(index)`).

    Its sublayers as the family arranges them (`config.style`): norms before them (`norm1`,
    `norm2`), after them before the residual add (`post1`, `post2`), or both; in sequence, or in
    parallel (attention and MLP read the same input, GPT-NeoX)."""

    def __init__(self, config: GPTConfig, index: int = 0) -> None:
        super().__init__()
        style = config.style
        if style.pre_norm:
            self.norm1 = norm(config)
        self.attn = Attention(config, index)
        if style.post_norm:
            self.post1 = norm(config)
        if style.pre_norm:
            self.norm2 = norm(config)
        self.mlp: MLP | MoE = MoE(config) if config.mixed(index) else MLP(config)
        if style.post_norm:
            self.post2 = norm(config)
        self.pre, self.post, self.parallel = style.pre_norm, style.post_norm, style.parallel
        self.offset = style.norm_offset and style.norm == "rms"
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        keys: torch.Tensor | None = None,
        site: int = 0,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        """`keys`: a dropout key per row (`lagdsl.model.dropout`); `site`: this block's first of 3;
        `cache`: the layer's keys and values of earlier positions (generation)."""
        by_rows = keys is not None and self.training and self.dropout.p > 0.0

        def drop(y: torch.Tensor, at: int) -> torch.Tensor:
            return row_dropout(y, self.dropout.p, keys, at) if by_rows and keys is not None else self.dropout(y)

        a = self.attn(self.norm1(x) if self.pre else x, cos, sin, keys if by_rows else None, site, cache)
        if self.post:
            a = self.post1(a)
        if self.parallel:  # (summed as GPT-NeoX sums them)
            return drop(self.mlp(self.norm2(x)), site + 2) + drop(a, site + 1) + x
        x = x + drop(a, site + 1)
        m = self.mlp(self.norm2(x) if self.pre else x)
        if self.post:
            m = self.post2(m)
        return x + drop(m, site + 2)

    def residual_outputs(self) -> list[torch.Tensor]:
        """The projections that write into the residual stream, weights and biases: attention's
        output, the MLP's down projection (a mixture's: every expert's, and the shared expert's).
        Zero, they make the block the identity: a post-norm of zero is zero, and in parallel both
        branches add zero."""
        mlp, out = self.mlp, list[torch.Tensor](self.attn.o.parameters())  # (its weight, and its bias)
        if isinstance(mlp, MoE):
            return out + [mlp.down] + ([mlp.shared.down.weight] if mlp.mixture.shared else [])
        return out + list(mlp.down.parameters())


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab, config.width)
        if config.style.positions:  # learned absolute positions (GPT-2)
            self.pos = nn.Embedding(config.style.positions, config.width)
        self.blocks = nn.ModuleDict({str(i): Block(config, i) for i in range(config.depth)})
        self.norm = norm(config)
        self.lm_head = nn.Linear(config.width, config.vocab, bias=False)
        if config.tie:
            self.lm_head.weight = self.embed.weight
        #: recompute each block's activations in the backward pass (`activations recompute`); the
        #: engine sets it on every model it trains, a grown one too
        self.recompute = False
        #: a mixture's router statistics of the last forward pass, one per block (`aux_loss`)
        self.routing: list[Routing] = []
        self.register_buffer("rotary_cos", torch.empty(0), persistent=False)
        self.register_buffer("rotary_sin", torch.empty(0), persistent=False)
        #: the local layers' tables where their base is another (Gemma 3's `rope_local_base_freq`)
        self.register_buffer("local_cos", torch.empty(0), persistent=False)
        self.register_buffer("local_sin", torch.empty(0), persistent=False)
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

    def take_ends(self, other: GPT) -> None:
        """Take `other`'s modules outside the blocks (the embedding, learned positions, the final
        norm, the head: shared, the tie kept) and its rotary tables: a grown model's, whose blocks
        alone are new."""
        self.embed, self.norm, self.lm_head = other.embed, other.norm, other.lm_head
        if self.config.style.positions:
            self.pos = other.pos
        for name in ("rotary_cos", "rotary_sin", "local_cos", "local_sin"):
            setattr(self, name, getattr(other, name))

    def end_names(self) -> list[str]:
        """The names of the parameters outside the blocks (a tied head is the embedding)."""
        return [name for name, _ in self.named_parameters() if not name.startswith("blocks.")]

    def init_buffers(self) -> None:
        """The rotary tables, on the device of the weights (after `to_empty`, which leaves them unset)."""
        config = self.config
        size = config.style.rotary_size(config.head_size)
        cos, sin = rotary_tables(config.context, size, config.rope_theta, config.rope_scaling)
        device = self.embed.weight.device
        self.rotary_cos, self.rotary_sin = cos.to(device), sin.to(device)
        if config.style.local_theta is not None:
            cos, sin = rotary_tables(config.context, size, config.style.local_theta)
            self.local_cos, self.local_sin = cos.to(device), sin.to(device)
        self._by_length: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each block's rotary tables for a sequence of `length` positions: the model's, or the
        local ones for a local layer where they have a base of their own."""
        tables = self.rotary(length)
        style = self.config.style
        if style.local_theta is None:
            return [tables] * len(self.blocks)
        local = (self.local_cos, self.local_sin)
        return [local if style.slides(i) else tables for i in range(len(self.blocks))]

    def embedded(self, idx: torch.Tensor, start: int = 0) -> torch.Tensor:
        """The stream's input for tokens `idx` (B, T) at positions `start`, ...: the embedding,
        times sqrt(width) in the weights' dtype (Gemma), plus learned positions (GPT-2)."""
        x = self.embed(idx)
        style = self.config.style
        if style.embed_scale:
            x = x * torch.tensor(self.config.width**0.5, dtype=x.dtype)
        if style.positions:
            x = x + self.pos(torch.arange(start, start + idx.shape[1], device=idx.device))
        return x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The output head's logits of the stream `x` (after the final norm), capped where the
        family caps them (Gemma 2's `c tanh(z / c)`)."""
        logits = self.lm_head(self.norm(x))
        cap = self.config.style.final_softcap
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def rotary(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotary tables of a sequence of `length` positions: the model's, unless its scaling
        reads the length (`dynamic`, `longrope`) and the sequence is longer than `rope.original`."""
        rope = self.config.rope_scaling
        if rope is None or not rope.by_length or length <= rope.original:
            return self.rotary_cos, self.rotary_sin
        key = length if rope.kind == "dynamic" else 0  # longrope: one long table
        if key not in self._by_length:
            config = self.config
            size = config.style.rotary_size(config.head_size)
            cos, sin = rotary_tables(config.context, size, config.rope_theta, rope, length)
            device = self.embed.weight.device
            self._by_length = {key: (cos.to(device), sin.to(device))}  # the latest length's only
        return self._by_length[key]

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
        x = self.embedded(idx)
        recompute = self.recompute and self.training and torch.is_grad_enabled()
        for i, (cos, sin) in enumerate(self.tables(idx.shape[1])):
            block = self.blocks[str(i)]
            if recompute:  # only the block's input is kept; its forward runs again in the backward pass
                x = checkpoint(block, x, cos, sin, keys, 3 * i, use_reentrant=False)
            else:
                x = block(x, cos, sin, keys, 3 * i)
        logits = self.logits(x)
        if self.config.moe is not None:
            mixtures = [self.block(i).mlp for i in range(len(self.blocks))]
            self.routing = [m.routing for m in mixtures if isinstance(m, MoE) and m.routing is not None]
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def aux_losses(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The last forward pass's load-balancing loss and router z-loss, each the mean over the
        blocks (None for a dense model, or before a forward pass): a mean, so that a coefficient
        means the same as the model grows deeper."""
        if not self.routing:
            return None
        balance = torch.stack([r.balance for r in self.routing]).mean()
        z_loss = torch.stack([r.z_loss for r in self.routing]).mean()
        return balance, z_loss

    def aux_loss(self) -> torch.Tensor | None:
        """What the mixture's auxiliary losses add to the training loss: each times its coefficient
        (`Mixture.balance`, `Mixture.z_loss`); None for a dense model."""
        losses, mixture = self.aux_losses(), self.config.moe
        if losses is None or mixture is None:
            return None
        return mixture.balance * losses[0] + mixture.z_loss * losses[1]

    def expert_load(self) -> list[list[float]]:
        """Each block's share of the last forward pass's (token, slot) assignments per expert."""
        return load_shares(torch.stack([r.counts for r in self.routing]))

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
    if config.style.positions:
        table = torch.empty(config.style.positions, config.width)
        yield "pos.weight", nn.init.normal_(table, 0.0, INIT_STD, generator=generator)
    residual_std = INIT_STD / math.sqrt(2 * config.depth)
    for i in range(config.depth):
        block = Block(config, i)
        init_block(block, residual_std, generator)
        for name, param in block.named_parameters():
            yield f"blocks.{i}.{name}", param.detach()
        del block, param  # one block whole at a time
    yield "norm.weight", torch.zeros(config.width) if config.style.norm_offset else torch.ones(config.width)
    if config.style.norm == "layer":
        yield "norm.bias", torch.zeros(config.width)
    if not config.tie:
        head = torch.empty(config.vocab, config.width)
        yield "lm_head.weight", nn.init.normal_(head, 0.0, INIT_STD, generator=generator)


def init_block(block: Block, residual_std: float, generator: torch.Generator | None) -> None:
    with torch.no_grad():
        for name, param in block.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif param.dim() == 1:  # a norm's gain: 1 (a weight of 0 where the gain is `1 + weight`)
                param.fill_(0.0 if block.offset else 1.0)
            else:
                nn.init.normal_(param, 0.0, INIT_STD, generator=generator)
        for weight in block.residual_outputs():
            if weight.dim() >= 2:  # (their biases stay zero)
                nn.init.normal_(weight, 0.0, residual_std, generator=generator)
