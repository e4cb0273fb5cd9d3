"""The model's config: its shape and the fixed choices of its family, in one frozen dataclass.

litgpt's `Config` is the model: one config holds what differs between the decoder families people
grow, and one model reads it (`lagdsl.model.gpt`). The fields: key/value heads fewer than the query
heads (grouped-query attention), an explicit head size and MLP size, a tied or untied output head,
the rotary base and its scaling, biases on q, k and v (Qwen2), an RMSNorm of each query and key head
(Qwen3), and the block's `style` (`lagdsl.lang.style`: norms, their placement, biases, positions,
caps, sliding windows). A `gpt` model from scratch has none of them: one key/value head per head,
tied, base 10,000, no biases, pre-norm RMSNorm. A family's adapter (`lagdsl.families`) reads a
checkpoint's `config.json` into these fields. Its sizes come from `lagdsl.lang.arch`, the same
arithmetic the plan's cost model uses; it imports no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from lagdsl.lang import layers
from lagdsl.lang.arch import grown_heads, grown_mlp, mlp_hidden
from lagdsl.lang.rope import Rope
from lagdsl.lang.style import DEFAULT, Style

if TYPE_CHECKING:
    from lagdsl.lang.layers import Layer
    from lagdsl.lang.schedule import Schedule, Shape


@dataclass(frozen=True)
class Mixture:
    """A mixture of experts in place of each block's MLP: a router (linear, no bias) over `experts`
    SwiGLU experts of hidden size `hidden`, the softmax over all experts, the `top_k` largest kept
    (divided by their sum where `renormalize`: Mixtral always, Qwen's `norm_topk_prob`), and where
    `shared` > 0 a shared SwiGLU expert of that hidden size beside them, gated by a sigmoid
    (Qwen2-MoE). `balance` and `z_loss` weigh the load-balancing loss and the router z-loss.
    `dense` lists the blocks (from 0) whose MLP stays a dense one of the model's `ffn` size
    (Qwen-MoE's `mlp_only_layers` and `decoder_sparse_step`); every other block's is the mixture."""

    experts: int
    top_k: int
    hidden: int
    shared: int = 0
    renormalize: bool = True
    balance: float = 0.01
    z_loss: float = 0.001
    dense: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.top_k <= self.experts:
            raise ValueError(f"top_k {self.top_k} is not between 1 and the {self.experts} experts")
        object.__setattr__(self, "dense", tuple(sorted(set(self.dense))))  # (a list, read back from JSON)


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
    rope_scaling: Rope | None = None  # how the rotary frequencies are scaled (None: not at all)
    qkv_bias: bool = False
    qk_norm: bool = False
    moe: Mixture | None = None  # a mixture of experts in place of the MLP (in every block but `moe.dense`)
    style: Style = DEFAULT  # what the family's blocks differ by (norms, biases, caps, windows: `lagdsl.lang.style`)

    def __post_init__(self) -> None:
        if isinstance(self.moe, dict):  # read back from a checkpoint or JSON
            object.__setattr__(self, "moe", Mixture(**self.moe))
        if isinstance(self.style, dict):
            object.__setattr__(self, "style", Style(**self.style))
        scaling = self.rope_scaling
        if isinstance(scaling, dict):  # read back from a checkpoint or JSON
            object.__setattr__(self, "rope_scaling", Rope(**scaling))
        elif isinstance(scaling, list | tuple):  # a checkpoint of an earlier version: Llama 3's four numbers
            factor, low, high, original = scaling
            object.__setattr__(self, "rope_scaling", Rope("llama3", factor, original, low, high))
        if self.head_dim is None and self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.heads % self.key_value_heads:
            raise ValueError(f"heads {self.heads} is not a multiple of kv_heads {self.key_value_heads}")
        dense = self.moe.dense if self.moe is not None else ()
        if any(not 0 <= i < self.depth for i in dense) or len(dense) == self.depth:
            raise ValueError(f"dense blocks {list(dense)} do not leave a mixture in a model of depth {self.depth}")
        if any(not 0 <= i < self.depth for i in self.style.local):
            raise ValueError(f"local layers {list(self.style.local)} are not layers of a model of depth {self.depth}")
        if self.style.positions and self.style.positions < self.context:
            raise ValueError(f"{self.style.positions} learned positions do not cover the context {self.context}")

    def mixed(self, i: int) -> bool:
        """Whether block `i`'s MLP is the mixture of experts (not a dense MLP)."""
        return self.moe is not None and i not in self.moe.dense

    @property
    def head_size(self) -> int:
        return self.head_dim if self.head_dim is not None else self.width // self.heads

    @property
    def key_value_heads(self) -> int:
        return self.kv_heads if self.kv_heads is not None else self.heads

    def fields(self) -> dict[str, Any]:
        """The config as plain data (what checkpoints store; `GPTConfig(**fields)` reads it back)."""
        return asdict(self)

    @property
    def hidden(self) -> int:
        return self.ffn if self.ffn is not None else mlp_hidden(self.width, self.mlp)

    def restacked(self, plan: list[Layer]) -> GPTConfig:
        """The model a depth growth's layer plan (`lagdsl.lang.layers`) builds: each position the
        kind of block of its source (`layers.carried`)."""
        style = self.style.restacked(plan)
        if self.moe is None or not self.moe.dense:
            return replace(self, depth=len(layers.positions(plan)), style=style)
        moe = replace(self.moe, dense=layers.carried(plan, self.moe.dense))
        return replace(self, depth=len(layers.positions(plan)), moe=moe, style=style)

    def grown(self, *, width: int) -> GPTConfig:
        """The same model at another width: heads and key/value heads grow with the width (the head
        size stays), an explicit MLP size in proportion (`lagdsl.lang.arch`)."""
        depth = self.depth
        if width == self.width:
            return self
        per_head = self.width // self.heads
        if width % (per_head * (self.heads // self.key_value_heads)):
            raise ValueError(f"width {width} is not a multiple of the width of a group of heads")
        heads = grown_heads(self.heads, self.width, width)
        kv_heads = grown_heads(self.kv_heads, self.width, width) if self.kv_heads is not None else None
        ffn = grown_mlp(self.ffn, self.width, width) if self.ffn is not None else None
        moe = self.moe
        if moe is not None:  # every expert, and a shared one, in proportion (exact for a whole multiple)
            shared = grown_mlp(moe.shared, self.width, width) if moe.shared else 0
            moe = replace(moe, hidden=grown_mlp(moe.hidden, self.width, width), shared=shared)
        return replace(self, depth=depth, width=width, heads=heads, kv_heads=kv_heads, ffn=ffn, moe=moe)

    @classmethod
    def from_schedule(cls, schedule: Schedule, shape: Shape | None = None) -> GPTConfig:
        """The config of a `Schedule`'s model, at `shape` (default: the initial shape)."""
        model = schedule.model
        shape = shape or model.shape
        moe, at = shape.moe, shape.positions  # (a grown context: the shape's positions)
        context, theta, rope = (
            (at.context, at.theta, at.rope) if at else (model.context, model.rope_theta, model.rope_scaling)
        )
        return cls(
            model.vocab, context, shape.width, shape.heads, shape.depth, model.mlp, model.dropout,
            norm_eps=model.norm_eps, kv_heads=shape.kv_heads, head_dim=model.head_dim, ffn=shape.hidden,
            tie=model.tie, rope_theta=theta, qkv_bias=model.qkv_bias, qk_norm=model.qk_norm,
            moe=Mixture(**moe.model_dump()) if moe is not None else None, rope_scaling=rope, style=model.style,
        )  # fmt: skip
