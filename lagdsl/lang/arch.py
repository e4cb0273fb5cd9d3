"""The model's sizes, as the model is built: the one place both the cost model and the torch model
read them from, so the plan's parameter counts are the model's (a test checks).

A model of width w, depth d, vocabulary V, h query heads and g key/value heads of size s is:

- a token embedding V x w; the output head is tied to it (counted once) or a V x w matrix of its own;
- per block: two RMSNorm gains (2w); attention projections q (hs x w), k and v (gs x w each) and
  o (w x hs), with biases on q, k and v where the family has them (Qwen2) and an RMSNorm gain of
  size s on each of q and k where it normalizes them per head (Qwen3); an MLP of hidden size m
  without biases: SwiGLU has three w x m matrices, GELU two;
- a final RMSNorm gain (w). Rotary position embeddings have no parameters.

A family's style (`lagdsl.lang.style`) adds to these: a bias per norm (LayerNorm), two more norms
per block (post-norms), biases on the output and MLP projections, a q/k norm over the whole
projection (hs and gs gains), and a learned position table (positions x w).

A mixture of experts in place of the MLP has a router (E x w, no bias), E SwiGLU experts of hidden
size m_e (3 w m_e each) and, where it has one, a shared SwiGLU expert of hidden size m_s (3 w m_s)
with its gate (w). A token uses the router, its top-k experts and the shared expert: the active
parameters, which set the FLOPs; memory holds them all. The blocks a mixture leaves dense (Qwen-MoE's
`mlp_only_layers`) have the dense MLP of hidden size m.

A `gpt` model from scratch has g = h, s = w / h, and m = 4w for GELU or 8w/3 rounded up to a
multiple of 8 for SwiGLU (the same parameter count as GELU's 4w, as in LLaMA). A pretrained model
gives each size explicitly, and its MLP grows in proportion to its width (`grown_mlp`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from lagdsl.lang.style import DEFAULT, Style

MLP_MULTIPLE = 8


class Experts(Protocol):
    """What the parameter count reads of a mixture of experts (a `MixtureSpec` or a `Mixture`)."""

    @property
    def experts(self) -> int: ...
    @property
    def top_k(self) -> int: ...
    @property
    def hidden(self) -> int: ...
    @property
    def shared(self) -> int: ...
    @property
    def dense(self) -> tuple[int, ...]: ...


#: the MLPs: a gated one (gate, up and down matrices) or a plain one (up and down)
GATED = ("swiglu", "geglu")
MLPS = ("swiglu", "geglu", "gelu", "gelu_tanh")


def mlp_hidden(width: int, mlp: str) -> int:
    """The MLP's hidden size of a `gpt` model of this width."""
    if mlp not in GATED:
        return 4 * width
    return -(-8 * width // (3 * MLP_MULTIPLE)) * MLP_MULTIPLE


def grown_mlp(hidden: int, width: int, new_width: int) -> int:
    """An explicit MLP hidden size after the width grows from `width` to `new_width`: in proportion,
    rounded up to a whole unit (exact for a whole multiple, as HyperCloning needs)."""
    return -(-hidden * new_width // width)


def grown_heads(heads: int, width: int, new_width: int) -> int:
    """Heads (query or key/value) after the width grows: in proportion, the head size kept."""
    return heads * new_width // width


@dataclass(frozen=True, slots=True)
class ParamCount:
    embedding: int  # the token embedding, and an untied output head
    per_block: int  # a block's (a mixture's block, in a model with dense ones too)
    depth: int
    final_norm: int
    dense: tuple[int, ...] = ()  # a mixture's dense blocks
    dense_block: int = 0  # each of their parameters

    def block(self, i: int) -> int:
        """Block `i`'s parameters."""
        return self.dense_block if i in self.dense else self.per_block

    @property
    def non_embedding(self) -> int:
        dense = sum(1 for i in self.dense if i < self.depth)
        return self.per_block * (self.depth - dense) + self.dense_block * dense + self.final_norm

    @property
    def total(self) -> int:
        return self.embedding + self.non_embedding


def param_count(
    *,
    vocab: int,
    width: int,
    depth: int,
    mlp: str,
    heads: int | None = None,
    kv_heads: int | None = None,
    head_dim: int | None = None,
    hidden: int | None = None,
    tie: bool = True,
    qkv_bias: bool = False,
    qk_norm: bool = False,
    moe: Experts | None = None,
    active: bool = False,
    style: Style = DEFAULT,
) -> ParamCount:
    """Exact trainable parameter counts. Without `heads`, a `gpt` model's attention (4 w^2). With
    `moe`, each block's MLP is that mixture; `active`: the parameters one token uses (its top-k
    experts, the router and the shared expert), which set the FLOPs. `style`: the family's norms,
    biases and positions (`lagdsl.lang.style`)."""
    hidden = hidden if hidden is not None else mlp_hidden(width, mlp)
    gated = mlp in GATED
    mlp_params = dense_mlp = (3 if gated else 2) * width * hidden
    if style.mlp_bias:
        dense_mlp = mlp_params = mlp_params + (2 if gated else 1) * hidden + width
    if moe is not None:
        used = moe.top_k if active else moe.experts
        mlp_params = 3 * width * moe.hidden * used + moe.experts * width
        mlp_params += 3 * width * moe.shared + width if moe.shared else 0
    if heads is None:
        attention = 4 * width * width
    else:
        size = head_dim if head_dim is not None else width // heads
        q, kv = heads * size, (kv_heads if kv_heads is not None else heads) * size
        norms = (q + kv if style.qk_norm_whole else 2 * size) if qk_norm else 0
        attention = 2 * width * q + 2 * width * kv + (q + 2 * kv if qkv_bias else 0) + norms
    attention += width if style.o_bias else 0
    norm = style.norm_params * width
    per_block = style.block_norms * norm + attention + mlp_params
    embedding = vocab * width * (1 if tie else 2) + style.positions * width
    dense = moe.dense if moe is not None else ()
    return ParamCount(
        embedding=embedding, per_block=per_block, depth=depth, final_norm=norm, dense=dense,
        dense_block=style.block_norms * norm + attention + dense_mlp if dense else 0,
    )  # fmt: skip
