"""The validated schedule: what the checker produces and everything downstream consumes.

Every name is resolved, every duration is in steps, every default is filled in, and the model's
shape before and after each stage is known. A `Schedule` always builds into a plan.

These models are also the one source of the language's parameters: the checker, the signatures in
its messages and `lagdsl ops` read each field's type, default, range (`Field(ge=...)`) and help
(`Field(description=...)`: the help line of a diagnostic about it, so it says how to write it).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lagdsl.lang.data_sources import DataSpec as DataSpec  # (re-exported: the schedule's data setting)
from lagdsl.lang.data_sources import JsonlData as JsonlData
from lagdsl.lang.data_sources import ParquetData as ParquetData
from lagdsl.lang.data_sources import StdlibData as StdlibData
from lagdsl.lang.data_sources import TextData as TextData
from lagdsl.lang.data_sources import TokenFiles as TokenFiles
from lagdsl.lang.data_sources import TokensData as TokensData
from lagdsl.lang.rope import Rope
from lagdsl.lang.style import DEFAULT, Style

Dim = Literal["depth", "width", "experts", "context"]


@dataclass(frozen=True)
class Written:
    """How the language writes a field, where that differs from its type: `auto` accepted (and the
    default), or a duration (`100 steps`, `1M tokens`, `5%`) that the checker converts to steps.
    Field metadata that `lagdsl.lang.params` reads."""

    auto: bool = False
    duration: bool = False


AUTO = Written(auto=True)
DURATION = Written(duration=True)

DURATION_HELP = "durations are written `100 steps`, `1M tokens` or `5%` (of `total`)"

# Limits: far above what anyone trains, low enough that a typo cannot ask for years of planning or
# terabytes of memory. The checker reports anything beyond them (E0302); docs/language.md lists them.
MAX_DEPTH = 1024
MAX_WIDTH = 65_536
MAX_HEADS = 1024
MAX_EXPERTS = 1024  # routed experts of one mixture
MAX_CONTEXT = 1 << 20
MAX_VOCAB = 1 << 24
MAX_BATCH = 1 << 20
MAX_STEPS = 1_000_000_000  # mainline steps of a whole schedule
MAX_STAGES = 10_000  # after `repeat` is written out
MAX_EVENTS = 10_000  # evaluations, and checkpoints, in one schedule: each is a node of the plan


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MixtureSpec(_Frozen):
    """A mixture of experts in place of each block's MLP (`lagdsl.model.config.Mixture`): `experts`
    routed SwiGLU experts of hidden size `hidden`, `top_k` of them per token, their weights
    renormalized to sum to 1 or not, a shared expert of hidden size `shared` (0: none), the
    coefficients of the load-balancing loss and the router z-loss, and the blocks (from 0) whose MLP
    stays dense (`dense`: Qwen-MoE's `mlp_only_layers`, `decoder_sparse_step`)."""

    experts: Annotated[int, Field(ge=2, le=MAX_EXPERTS)]
    top_k: Annotated[int, Field(ge=1, le=MAX_EXPERTS)]
    hidden: Annotated[int, Field(ge=1, le=MAX_WIDTH * 16)]
    shared: Annotated[int, Field(ge=0, le=MAX_WIDTH * 16)] = 0
    renormalize: bool = True
    balance: Annotated[float, Field(ge=0.0)] = 0.01
    z_loss: Annotated[float, Field(ge=0.0)] = 0.001
    dense: tuple[Annotated[int, Field(ge=0, lt=MAX_DEPTH)], ...] = ()

    @field_validator("dense")
    @classmethod
    def _sorted(cls, dense: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted(set(dense)))

    def __str__(self) -> str:
        shared = f" + a shared expert of {self.shared}" if self.shared else ""
        dense = f" (dense in {layer_list(self.dense)})" if self.dense else ""
        return f"{self.experts} experts of {self.hidden}, top-{self.top_k}{shared}{dense}"


def layer_list(indices: tuple[int, ...]) -> str:
    """Layers for messages, in runs: "layer 0", "layers 0-3, 8"."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    words = [str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs]
    return ("layer " if len(indices) == 1 else "layers ") + ", ".join(words)


class GptExperts(_Frozen):
    """A `gpt` model that is a mixture of experts from the start: the arguments `gpt(...)` takes for
    it (its other settings are `upcycle`'s defaults: renormalized top-k weights, the `gpt` MLP's
    hidden size for each expert, no shared expert)."""

    experts: Annotated[
        int, Field(ge=1, le=MAX_EXPERTS, description="`experts=8` makes every MLP a mixture of 8 experts; 1 is dense")
    ] = 1
    top_k: Annotated[int, Field(ge=1, le=MAX_EXPERTS, description="`top_k` is how many experts each token uses")] = 2


class GptNorm(_Frozen):
    """The norm of a `gpt` model: RMSNorm (LLaMA's) or LayerNorm with a bias (GPT-2's, GPT-NeoX's)."""

    norm: Annotated[
        Literal["rms", "layer"],
        Field(description="`norm=layer` makes every norm a LayerNorm with a bias (GPT-2's); `rms` is LLaMA's"),
    ] = "rms"


class Positions(_Frozen):
    """The model's positions: its context, rotary base and scaling (`grow context` changes them)."""

    context: Annotated[int, Field(ge=1, le=MAX_CONTEXT)]
    theta: Annotated[float, Field(gt=0.0)] = 10_000.0
    rope: Rope | None = None


class Shape(_Frozen):
    """The model's shape. The width per head `width / heads` never changes as it grows, so heads
    grow with the width; key/value heads (`kv_heads`, None: as many as the heads) and an explicit
    MLP size (`hidden`, None: the `gpt` formula of the width) grow in proportion."""

    depth: Annotated[int, Field(ge=1, le=MAX_DEPTH)]
    width: Annotated[int, Field(ge=1, le=MAX_WIDTH)]
    heads: Annotated[int, Field(ge=1, le=MAX_HEADS)]
    kv_heads: Annotated[
        int | None,
        Field(ge=1, le=MAX_HEADS, description="key/value heads (grouped-query attention) divide `heads`, such as `2`"),
    ] = None
    hidden: Annotated[int | None, Field(ge=1, le=MAX_WIDTH * 16)] = None
    #: a mixture of experts in place of the MLP, in every block but `moe.dense` (None: dense MLPs)
    moe: MixtureSpec | None = None
    #: the context and rotary positions (None: the model's, as `model` gives them)
    positions: Positions | None = None

    @model_validator(mode="after")
    def _mixture_left(self) -> Shape:
        dense = self.moe.dense if self.moe is not None else ()
        if any(i >= self.depth for i in dense) or len(dense) == self.depth:
            raise ValueError(f"dense layers {list(dense)} do not leave a mixture in a model of depth {self.depth}")
        return self

    @property
    def experts(self) -> int:
        """The routed experts of each block's MLP: 1 for a dense MLP."""
        return self.moe.experts if self.moe is not None else 1

    @property
    def head_size(self) -> int:
        """The width per head (the attention head size of a `gpt` model)."""
        return self.width // self.heads

    @property
    def groups(self) -> int:
        """Query heads per key/value head."""
        return self.heads // (self.kv_heads or self.heads)

    @property
    def context(self) -> int:
        """The context (a model's shape always has its positions: `ModelSpec` sets them)."""
        assert self.positions is not None, "a shape without positions"
        return self.positions.context

    def __str__(self) -> str:
        kv = f", kv_heads {self.kv_heads}" if self.kv_heads not in (None, self.heads) else ""
        moe = f", {self.moe}" if self.moe is not None else ""
        return f"depth {self.depth}, width {self.width}, heads {self.heads}{kv}{moe}"


class Pretrained(_Frozen):
    """Where a pretrained model comes from: a Hugging Face folder, read by a family's adapter."""

    path: str  # as written, relative to the schedule's folder
    folder: str  # where it is: the path resolved
    family: str  # the adapter's name: llama, mistral, qwen2, qwen3
    architecture: str  # the `architectures` entry, such as `Qwen2ForCausalLM`
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # how the weights are held (auto: fp32)
    tokenizer: str | None = None  # the folder's `tokenizer.json`, where it has one
    params: int  # the checkpoint's parameter count, from its config


class ModelSpec(_Frozen):
    """A decoder-only Transformer (pre-norm RMSNorm, rotary positions, tied embeddings)."""

    family: Literal["gpt"] = "gpt"
    vocab: Annotated[int, Field(ge=1, le=MAX_VOCAB, description="`auto` takes it from the data: 256 for bytes"), AUTO]
    context: Annotated[int, Field(ge=1, le=MAX_CONTEXT)]
    shape: Shape
    mlp: Literal["swiglu", "gelu", "geglu", "gelu_tanh"] = "swiglu"  # (the last two: a pretrained family's)
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    tie: Annotated[
        bool, Field(description="`tie=on` shares the input embedding with the output head, `tie=off` keeps two")
    ] = True
    rope_theta: Annotated[float, Field(gt=0.0, description="the rotary base, such as `10000` or `500000`")] = 10_000.0
    head_dim: int | None = None  # the attention head size where it is not `width / heads` (Qwen3)
    rope_scaling: Rope | None = None  # how the rotary frequencies are scaled (a checkpoint's RoPE type)
    qkv_bias: bool = False  # biases on the q, k and v projections (Qwen2)
    qk_norm: bool = False  # RMSNorm of each query and key head before the rotation (Qwen3)
    norm_eps: float = 1e-6
    style: Style = DEFAULT  # what a pretrained family's blocks differ by (`lagdsl.lang.style`)
    pretrained: Pretrained | None = None  # None: initialized from the seed

    @model_validator(mode="after")
    def _positioned(self) -> ModelSpec:
        """The initial shape holds the model's positions (each growth's shape its own)."""
        if self.shape.positions is None:
            positions = Positions(context=self.context, theta=self.rope_theta, rope=self.rope_scaling)
            object.__setattr__(self, "shape", self.shape.model_copy(update={"positions": positions}))
        return self

    @property
    def attention_head(self) -> int:
        """The attention head size."""
        return self.head_dim or self.shape.head_size


class PretrainedCall(_Frozen):
    """A pretrained Hugging Face checkpoint folder (Llama, Mistral, Qwen2, Qwen3): its shape from
    `config.json`, its weights, and its tokenizer for the data."""

    path: Annotated[str, Field(description='the checkpoint\'s folder, such as `"models/smollm2-135m"`')]
    context: Annotated[
        int,
        Field(ge=1, le=MAX_CONTEXT, description="`auto` is the checkpoint's `max_position_embeddings`"),
        AUTO,
    ]
    dtype: Annotated[
        Literal["auto", "fp32", "bf16", "fp16"],
        Field(description="how the weights are held: `auto` is fp32, which mixed precision trains from"),
    ] = "auto"
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0


_LR = Annotated[float, Field(gt=0.0, description="a learning rate such as `3e-4`")]
_CLIP = Annotated[float, Field(ge=0.0, description="the gradient-norm clip; `0` turns clipping off")]
_BETA = Annotated[float, Field(ge=0.0, lt=1.0)]


class AdamW(_Frozen):
    name: Literal["adamw"] = "adamw"
    lr: _LR
    betas: tuple[_BETA, _BETA] = (0.9, 0.95)
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.1
    eps: Annotated[float, Field(gt=0.0)] = 1e-8
    clip: _CLIP = 1.0


class SGD(_Frozen):
    name: Literal["sgd"] = "sgd"
    lr: _LR
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    nesterov: bool = False
    clip: _CLIP = 1.0


OptimizerSpec = Annotated[AdamW | SGD, Field(discriminator="name")]

_STEPS = Annotated[int, Field(ge=0, description=DURATION_HELP), DURATION]


class LRSpec(_Frozen):
    """The LR over mainline steps 0 .. total: warmup, then the schedule's shape down to `min`."""

    kind: Literal["constant", "cosine", "linear", "wsd"] = "constant"
    warmup: _STEPS = 0
    min: Annotated[float, Field(ge=0.0, description="the final learning rate, such as `3e-5`")] = 0.0
    decay: _STEPS = 0  # wsd only: the final steps over which the LR decays


class EvalSpec(_Frozen):
    every: Annotated[int, Field(ge=1), DURATION]
    batches: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 10


class CheckpointSpec(_Frozen):
    every: Annotated[int | None, DURATION] = None  # None: at the end only
    keep: Annotated[int, Field(ge=1, le=MAX_EVENTS)] = 3


class OperatorSpec(_Frozen):
    """One operator with its arguments; `label` names it among a probe's candidates."""

    name: str
    dim: Dim
    args: dict[str, float | int | bool | str | tuple[tuple[int, int], ...]] = {}
    label: str
    preserves: Literal["yes", "no", "approx"]


class SelectRule(_Frozen):
    """`lowest loss [over last N steps]` or `lowest val_loss`; window None: the loss at growth."""

    metric: Literal["loss", "val_loss"] = "loss"
    window: int | None = None
    #: `val_loss at positions A..B`: the held-out loss of the tokens at positions A to B - 1 alone
    #: (what a context growth is for: the positions beyond the old context)
    positions: tuple[int, int] | None = None

    @staticmethod
    def default_window(probe_steps: int) -> int:
        """The window of the rule a probe block without `select` uses: the last fifth of its steps."""
        return max(1, probe_steps // 5)

    @property
    def text(self) -> str:
        """The rule in words, as plans, select events, studies and reports show it."""
        if self.metric == "val_loss":
            return "lowest val_loss" + (
                f" at positions {self.positions[0]}..{self.positions[1]}" if self.positions else ""
            )
        if self.window is None:  # a probe of 0 steps: the loss right after growth
            return "lowest loss"
        if self.window == 1:
            return "lowest loss at the last step"
        return f"lowest loss over last {self.window} steps"


class ProbeSpec(_Frozen):
    candidates: tuple[OperatorSpec, ...]
    steps: int
    select: SelectRule
    keep: Literal["winner", "rewind"] = "winner"


class Growth(_Frozen):
    dim: Dim
    before: Shape
    after: Shape
    op: OperatorSpec | None = None  # `with OP`
    probe: ProbeSpec | None = None  # a landscape-aware choice
    line: int


#: The parts of the model that `freeze` and `lr_scale` name (besides `layers(a, b)`).
PARTS = ("old", "new", "embed", "head")


class Part(_Frozen):
    """A part of the model: `old` (what existed before the stage's growth), `new` (the rest),
    `embed`, `head` (the output head; a tied one is the embedding), or the layers `[start, end)`
    of the grown model."""

    kind: Literal["old", "new", "embed", "head", "layers"]
    start: int = 0
    end: int = 0

    def __str__(self) -> str:
        return f"layers({self.start}, {self.end})" if self.kind == "layers" else self.kind


class Stage(_Frozen):
    name: str
    index: int
    start_step: int  # the mainline step at which the stage begins
    train_steps: int
    growths: tuple[Growth, ...] = ()
    rewarm: int = 0
    reset_optimizer: bool = False
    #: what does not change while the stage trains (its probes included)
    freeze: tuple[Part, ...] = ()
    #: LR multipliers by part, the last one written winning where parts overlap
    lr_scale: tuple[tuple[Part, float], ...] = ()
    before: Shape
    after: Shape
    line: int

    def growth_key(self, index: int) -> str:
        """How the stage's `index`-th growth is named in plans, winners and reports: the stage's
        name, or `STAGE/gN` (1-based) in a stage with several growths."""
        return self.name if len(self.growths) == 1 else f"{self.name}/g{index + 1}"


class Schedule(_Frozen):
    version: Literal[1] = 1
    name: str
    file: str
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: Annotated[bool, Field(description="write `compile on` or `compile off`")] = False
    parallel: Annotated[
        Literal["ddp", "fsdp"],
        Field(description="how several ranks (under torchrun) share the model: replicated or sharded"),
    ] = "ddp"
    probes: Annotated[
        Literal["sequential", "parallel"],
        Field(description="under torchrun, whether a probe's candidates train side by side on rank groups"),
    ] = "sequential"
    activations: Annotated[
        Literal["keep", "recompute"],
        Field(description="keep each block's activations for the backward pass, or recompute them there"),
    ] = "keep"
    model: ModelSpec
    data: DataSpec = StdlibData()
    batch: Annotated[int, Field(ge=1, le=MAX_BATCH)]  # rows per micro-batch at the model's first context
    #: `batch N tokens`: the rows follow the context (N / context), so the tokens per step stay
    batch_tokens: int | None = None
    accumulate: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 1
    optimizer: OptimizerSpec
    lr: LRSpec = LRSpec()
    total_steps: int
    eval: EvalSpec | None = None
    checkpoint: CheckpointSpec = CheckpointSpec()
    log_every: int = 1
    stages: tuple[Stage, ...]

    def rows(self, context: int) -> int:
        """The rows of a micro-batch at `context`: the `batch`, or `batch N tokens` / context."""
        return self.batch_tokens // context if self.batch_tokens is not None else self.batch

    @property
    def tokens_per_step(self) -> int:
        """Tokens per step at the model's first context (`tokens_at` follows its growth)."""
        return self.batch * self.accumulate * self.model.context

    def tokens_at(self, steps: int) -> int:
        """The tokens of the first `steps` mainline steps, each step's at its stage's context (the
        engine asks at every logged step: a bisection over the stages' starts)."""
        starts, before, per_step = self._token_marks
        steps = min(max(steps, 0), self.total_steps)  # (the stages end at `total_steps`)
        i = max(0, bisect_right(starts, steps) - 1)
        return before[i] + (steps - starts[i]) * per_step[i]

    @cached_property
    def _token_marks(self) -> tuple[list[int], list[int], list[int]]:
        """Each stage's first step, the tokens before it, and its tokens per step."""
        starts, before, per_step, total = [], [], [], 0
        for stage in self.stages:
            context = stage.after.context
            starts.append(stage.start_step)
            before.append(total)
            per_step.append(self.rows(context) * self.accumulate * context)
            total += stage.train_steps * per_step[-1]
        return starts, before, per_step

    @property
    def eval_batches(self) -> int:
        """Validation batches per evaluation: the `eval` setting's, else `EvalSpec`'s default."""
        return self.eval.batches if self.eval else EvalSpec.model_fields["batches"].default

    @property
    def final_shape(self) -> Shape:
        return self.stages[-1].after
