"""The operator catalogue and the signatures of the language's built-in calls. No torch here.

The checker reads this module to validate a schedule; `lagdsl ops` prints it; the runtime looks up
each entry's `impl` (a "module:function" path) to run it. An entry is keyed by (name, dimension):
`random` grows depth and width, with a different meaning for each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from lagdsl.lang import layers
from lagdsl.lang.layers import Layer
from lagdsl.lang.params import Param, Signature
from lagdsl.lang.schedule import Dim, Shape

DIMS: tuple[Dim, ...] = ("depth", "width")
Preserves = Literal["yes", "no", "approx"]


#: (before, after) -> a reason the operator cannot perform this growth, or None.
Constraint = Callable[[Shape, Shape], "str | None"]
#: (d, b) -> the layer plan a depth operator builds when it adds b layers to d.
LayerPlan = Callable[[int, int], "list[Layer]"]


@dataclass(frozen=True)
class OperatorInfo:
    """What the checker and `lagdsl ops` know of one growth operator."""

    name: str
    dim: Dim
    params: tuple[Param, ...]
    preserves: Preserves
    description: str
    impl: str
    constraint: Constraint | None = None
    #: a depth operator's layer plan, where it has one; the checker compares candidates' plans
    layers: LayerPlan | None = None

    @property
    def signature(self) -> Signature:
        return Signature(self.name, self.params, description=self.description)

    def cannot(self, before: Shape, after: Shape) -> str | None:
        return self.constraint(before, after) if self.constraint else None


_NOISE = Param(
    "noise",
    "float",
    0.0,
    ge=0.0,
    help="`noise` is a multiple of each copied tensor's standard deviation, such as `0.01`",
)


def _copies_layers(what: str) -> Constraint:
    def check(before: Shape, after: Shape) -> str | None:
        added = after.depth - before.depth
        if added > before.depth:
            return f"it copies {what} {added} layers and the model has {before.depth}"
        return None

    return check


def _whole_stack(before: Shape, after: Shape) -> str | None:
    added = after.depth - before.depth
    if added % before.depth:
        return (
            f"it repeats the whole stack of {before.depth} layers, so it adds a multiple of {before.depth}, not {added}"
        )
    return None


_DEPTH = "lagdsl.ops.depth"
_WIDTH = "lagdsl.ops.width"

BUILTIN_OPERATORS: tuple[OperatorInfo, ...] = (
    OperatorInfo(
        "copy_top",
        "depth",
        (_NOISE,),
        "no",
        "copies of the top b layers, placed on top (gradual stacking)",
        f"{_DEPTH}:copy_top",
        _copies_layers("the top"),
        layers=layers.copy_top,
    ),
    OperatorInfo(
        "copy_bottom",
        "depth",
        (_NOISE,),
        "no",
        "copies of the bottom b layers, placed on top",
        f"{_DEPTH}:copy_bottom",
        _copies_layers("the bottom"),
        layers=layers.copy_bottom,
    ),
    OperatorInfo(
        "midas",
        "depth",
        (_NOISE,),
        "no",
        "a copy of the middle block of b layers, inserted right after it (MIDAS)",
        f"{_DEPTH}:midas",
        _copies_layers("the middle"),
        layers=layers.midas,
    ),
    OperatorInfo(
        "stack",
        "depth",
        (_NOISE,),
        "no",
        "the whole stack repeated on top, in order (progressive stacking)",
        f"{_DEPTH}:stack",
        _whole_stack,
        layers=layers.stack,
    ),
    OperatorInfo(
        "interleave",
        "depth",
        (_NOISE,),
        "no",
        "a copy of each of b evenly spaced layers, right after its source",
        f"{_DEPTH}:interleave",
        _copies_layers("one each of"),
        layers=layers.interleave,
    ),
    OperatorInfo(
        "random",
        "depth",
        (),
        "no",
        "freshly initialized layers on top",
        f"{_DEPTH}:random",
        layers=layers.on_top,
    ),
    OperatorInfo(
        "identity",
        "depth",
        (),
        "yes",
        "fresh layers on top whose residual output projections are zero",
        f"{_DEPTH}:identity",
        layers=layers.on_top,
    ),
    OperatorInfo(
        "net2net",
        "width",
        (_NOISE,),
        "yes",
        "copies of random existing units, what reads a copy split among the copies (Net2Net)",
        f"{_WIDTH}:net2net",
    ),
    OperatorInfo(
        "zero",
        "width",
        (),
        "yes",
        "fresh incoming weights, zero outgoing weights, new residual dimensions start at zero",
        f"{_WIDTH}:zero",
    ),
    OperatorInfo(
        "random",
        "width",
        (),
        "no",
        "freshly initialized units",
        f"{_WIDTH}:random",
    ),
)


ENTRY_POINT_GROUP = "lagdsl.operators"


class Catalogue:
    """Operators by name and dimension: the built-in ones, then those of installed plugins.

    A plugin is a package with an entry point in the group `lagdsl.operators` whose object is an
    `OperatorInfo` or a list of them (torch-free data; `impl` names the function that runs it).
    Plugins load on the first lookup of a name that is not built in, so validating a schedule
    that uses only built-in operators reads no package metadata. A plugin that fails to load is
    skipped and described in `problems`.
    """

    def __init__(self, entries: tuple[OperatorInfo, ...] = BUILTIN_OPERATORS, *, plugins: bool = True) -> None:
        self._entries: dict[tuple[str, Dim], OperatorInfo] = {}
        self._plugins_pending = plugins
        self.problems: list[str] = []
        for entry in entries:
            self.add(entry)

    def add(self, entry: OperatorInfo) -> None:
        key = (entry.name, entry.dim)
        if key in self._entries:
            raise ValueError(f"operator `{entry.name}` for {entry.dim} is defined twice")
        self._entries[key] = entry

    def load_plugins(self) -> None:
        if not self._plugins_pending:
            return
        self._plugins_pending = False
        from importlib.metadata import entry_points

        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                loaded = point.load()
                items = loaded if isinstance(loaded, (list, tuple)) else [loaded]
                for item in items:
                    if not isinstance(item, OperatorInfo):
                        raise TypeError(f"{item!r} is not an OperatorInfo")
                    self.add(item)
            except Exception as error:  # a broken plugin must not break the tool
                self.problems.append(f"plugin `{point.name}` ({point.value}) was skipped: {error}")

    def __iter__(self) -> Iterator[OperatorInfo]:
        self.load_plugins()
        return iter(list(self._entries.values()))

    def names(self) -> list[str]:
        self.load_plugins()
        return sorted({name for name, _ in self._entries})

    def get(self, name: str, dim: Dim) -> OperatorInfo | None:
        if (name, dim) not in self._entries:
            self.load_plugins()
        return self._entries.get((name, dim))

    def lookup(self, name: str) -> list[OperatorInfo]:
        """Every entry of that name, depth first."""
        if not any((name, d) in self._entries for d in DIMS):
            self.load_plugins()
        return [self._entries[(name, d)] for d in DIMS if (name, d) in self._entries]


def default_catalogue() -> Catalogue:
    """The built-in operators and those of installed plugins."""
    return Catalogue()


# ------------------------------------------------------------------------------ other calls

_STEPS_HELP = "durations are written `100 steps`, `1M tokens` or `5%` (of `total`)"

MODELS: dict[str, Signature] = {
    "gpt": Signature(
        "gpt",
        (
            Param("vocab", "int", "auto", ge=1, auto=True, help="`auto` takes it from the data: 256 for bytes"),
            Param("context", "int", ge=1),
            Param("width", "int", ge=1),
            Param("heads", "int", ge=1),
            Param("depth", "int", ge=1),
            Param("mlp", "choice", "swiglu", choices=("swiglu", "gelu")),
            Param("dropout", "float", 0.0, ge=0.0, lt=1.0),
        ),
        description="a decoder-only Transformer (pre-norm RMSNorm, rotary positions, tied embeddings)",
    ),
}

DATA: dict[str, Signature] = {
    "stdlib": Signature(
        "stdlib",
        (Param("val", "float", 0.05, gt=0.0, lt=1.0, help="`val` is the held-out share, such as `0.05`"),),
        description="the running Python's standard library source, as bytes",
    ),
    "text": Signature(
        "text",
        (
            Param("glob", "str", help='the files, as a glob such as `"data/*.txt"`'),
            Param("val", "float", 0.05, gt=0.0, lt=1.0),
        ),
        positional=("glob",),
        description="UTF-8 text files, as bytes",
    ),
    "tokens": Signature(
        "tokens",
        (
            Param("train", "str", help='the training tokens, such as `"train.bin"`'),
            Param("val", "str", None),
            Param("dtype", "choice", "uint16", choices=("uint16", "uint32")),
        ),
        positional=("train",),
        description="pre-tokenized memory-mapped arrays (nanoGPT's format)",
    ),
}

_LR = Param("lr", "float", gt=0.0, help="a learning rate such as `3e-4`")
_CLIP = Param("clip", "float", 1.0, ge=0.0, help="the gradient-norm clip; `0` turns clipping off")

OPTIMIZERS: dict[str, Signature] = {
    "adamw": Signature(
        "adamw",
        (
            _LR,
            Param("betas", "pair", (0.9, 0.95), ge=0.0, lt=1.0),
            Param("weight_decay", "float", 0.1, ge=0.0),
            Param("eps", "float", 1e-8, gt=0.0),
            _CLIP,
        ),
    ),
    "sgd": Signature(
        "sgd",
        (
            _LR,
            Param("momentum", "float", 0.0, ge=0.0, lt=1.0),
            Param("weight_decay", "float", 0.0, ge=0.0),
            Param("nesterov", "bool", False),
            _CLIP,
        ),
    ),
}

_WARMUP = Param("warmup", "duration", 0, help=_STEPS_HELP)
_MIN = Param("min", "float", 0.0, ge=0.0, help="the final learning rate, such as `3e-5`")

LR_SCHEDULES: dict[str, Signature] = {
    "constant": Signature("constant", (_WARMUP,)),
    "cosine": Signature("cosine", (_WARMUP, _MIN)),
    "linear": Signature("linear", (_WARMUP, _MIN)),
    "wsd": Signature("wsd", (_WARMUP, Param("decay", "duration", help=_STEPS_HELP), _MIN)),
}

EVAL_OPTIONS = Signature("eval", (Param("batches", "int", 10, ge=1),))
CHECKPOINT_OPTIONS = Signature("checkpoint", (Param("keep", "int", 3, ge=1),))

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SELECT_METRICS = ("loss", "val_loss")
KEEP_MODES = ("winner", "rewind")
