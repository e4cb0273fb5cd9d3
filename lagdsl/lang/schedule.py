"""The validated schedule: what the checker produces and everything downstream consumes.

Every name is resolved, every duration is in steps, every default is filled in, and the model's
shape before and after each stage is known. A `Schedule` always builds into a plan.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Dim = Literal["depth", "width"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Shape(_Frozen):
    """The model's shape: the head size `width / heads` never changes as it grows."""

    depth: int
    width: int
    heads: int

    @property
    def head_size(self) -> int:
        return self.width // self.heads

    def __str__(self) -> str:
        return f"depth {self.depth}, width {self.width}, heads {self.heads}"


class ModelSpec(_Frozen):
    family: Literal["gpt"] = "gpt"
    vocab: int
    context: int
    shape: Shape
    mlp: Literal["swiglu", "gelu"] = "swiglu"
    dropout: float = 0.0


class StdlibData(_Frozen):
    kind: Literal["stdlib"] = "stdlib"
    val: float = 0.05


class TextData(_Frozen):
    kind: Literal["text"] = "text"
    glob: str
    val: float = 0.05


class TokensData(_Frozen):
    kind: Literal["tokens"] = "tokens"
    train: str
    val: str | None = None
    dtype: Literal["uint16", "uint32"] = "uint16"


DataSpec = Annotated[StdlibData | TextData | TokensData, Field(discriminator="kind")]


class AdamW(_Frozen):
    name: Literal["adamw"] = "adamw"
    lr: float
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    eps: float = 1e-8
    clip: float = 1.0


class SGD(_Frozen):
    name: Literal["sgd"] = "sgd"
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    clip: float = 1.0


OptimizerSpec = Annotated[AdamW | SGD, Field(discriminator="name")]


class LRSpec(_Frozen):
    """The LR over mainline steps 0 .. total: warmup, then the schedule's shape down to `min`."""

    kind: Literal["constant", "cosine", "linear", "wsd"] = "constant"
    warmup: int = 0
    min: float = 0.0
    decay: int = 0  # wsd only: the final steps over which the LR decays


class EvalSpec(_Frozen):
    every: int
    batches: int = 10


class CheckpointSpec(_Frozen):
    every: int | None = None  # None: at the end only
    keep: int = 3


class OperatorSpec(_Frozen):
    """One operator with its arguments; `label` names it among a probe's candidates."""

    name: str
    dim: Dim
    args: dict[str, float | int | bool | str] = {}
    label: str
    preserves: Literal["yes", "no", "approx"]


class SelectRule(_Frozen):
    """`lowest loss [over last N steps]` or `lowest val_loss`; window None: the loss at growth."""

    metric: Literal["loss", "val_loss"] = "loss"
    window: int | None = None


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


class Stage(_Frozen):
    name: str
    index: int
    start_step: int  # the mainline step at which the stage begins
    train_steps: int
    growths: tuple[Growth, ...] = ()
    rewarm: int = 0
    reset_optimizer: bool = False
    before: Shape
    after: Shape
    line: int


class Schedule(_Frozen):
    version: Literal[1] = 1
    name: str
    file: str
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    model: ModelSpec
    data: DataSpec = StdlibData()
    batch: int
    accumulate: int = 1
    optimizer: OptimizerSpec
    lr: LRSpec = LRSpec()
    total_steps: int
    eval: EvalSpec | None = None
    checkpoint: CheckpointSpec = CheckpointSpec()
    log_every: int = 1
    stages: tuple[Stage, ...]

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.accumulate * self.model.context

    @property
    def final_shape(self) -> Shape:
        return self.stages[-1].after
