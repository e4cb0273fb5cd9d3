"""The operator catalogue and the signatures of the language's built-in calls. No torch here.

The checker reads this module to validate a schedule; `lagdsl ops` prints it; the runtime looks up
each entry's `impl` (a "module:function" path) to run it. An entry is keyed by (name, dimension):
`random` grows depth and width, with a different meaning for each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, get_args

from lagdsl.lang import context_args, layers
from lagdsl.lang.layers import Layer
from lagdsl.lang.operator_args import CloneArgs as CloneArgs  # (re-exported: plugins import them from here)
from lagdsl.lang.operator_args import CopyArgs as CopyArgs
from lagdsl.lang.operator_args import DuplicateArgs as DuplicateArgs
from lagdsl.lang.operator_args import LayersArgs as LayersArgs
from lagdsl.lang.operator_args import MixtureArgs as MixtureArgs
from lagdsl.lang.operator_args import NoArgs as NoArgs
from lagdsl.lang.operator_args import OperatorArgs as OperatorArgs
from lagdsl.lang.operator_args import UpcycleArgs as UpcycleArgs
from lagdsl.lang.params import Param, Signature, params_of
from lagdsl.lang.schedule import (
    SGD,
    AdamW,
    CheckpointSpec,
    Dim,
    EvalSpec,
    GptExperts,
    GptNorm,
    JsonlData,
    LRSpec,
    MixtureSpec,
    ModelSpec,
    ParquetData,
    Positions,
    PretrainedCall,
    ProbeSpec,
    Schedule,
    SelectRule,
    Shape,
    StdlibData,
    TextData,
    TokensData,
)

DIMS: tuple[Dim, ...] = ("depth", "width", "experts", "context")
Preserves = Literal["yes", "no", "approx"]


#: (before, after) -> a reason the operator cannot perform this growth, or None.
Constraint = Callable[[Shape, Shape], "str | None"]
#: (d, b) -> the layer plan a depth operator builds when it adds b layers to d.
LayerPlan = Callable[[int, int], "list[Layer]"]
#: (before, after, arguments) -> a reason the operator cannot perform this growth with them, or None.
ArgsConstraint = Callable[[Shape, Shape, Mapping[str, object]], "str | None"]
#: (d, b, arguments) -> the layer plan of a depth operator whose plan depends on its arguments.
ArgsLayerPlan = Callable[[int, int, Mapping[str, object]], "list[Layer]"]
#: (before, experts, arguments) -> the mixture an experts operator builds, or why it cannot.
MixturePlan = Callable[[Shape, int, Mapping[str, object]], "MixtureSpec | str"]
#: (positions before, new context, arguments, head size) -> a context operator's positions, or why it cannot.
PositionsPlan = Callable[[Positions, int, Mapping[str, object], int], "Positions | str"]
#: arguments -> whether the operator keeps the function with them (where that depends on them).
PreservesWith = Callable[[Mapping[str, object]], "Preserves"]


@dataclass(frozen=True)
class OperatorInfo:
    """What the checker and `lagdsl ops` know of one growth operator."""

    name: str
    dim: Dim
    args: type[OperatorArgs]
    preserves: Preserves
    description: str
    impl: str
    constraint: Constraint | None = None
    #: a depth operator's layer plan, where it has one; the checker compares candidates' plans
    layers: LayerPlan | None = None
    #: a check of the arguments against the growth, where the operator's depend on it
    args_constraint: ArgsConstraint | None = None
    #: the layer plan of an operator whose plan its arguments give (`layers`)
    args_layers: ArgsLayerPlan | None = None
    #: the parameters that may be given by position (`layers([[0, 24], [8, 32]])`)
    positional: tuple[str, ...] = ()
    #: an experts operator's mixture (it sets the grown shape's `moe`)
    mixture: MixturePlan | None = None
    #: whether the operator keeps the function, where its arguments decide (else `preserves`)
    preserves_with: PreservesWith | None = None
    #: a context operator's positions (it sets the grown shape's `positions`)
    positions: PositionsPlan | None = None

    def preserves_for(self, args: Mapping[str, object]) -> Preserves:
        """Whether the operator keeps the function with these arguments."""
        return self.preserves_with(args) if self.preserves_with is not None else self.preserves

    @cached_property
    def params(self) -> tuple[Param, ...]:
        return params_of(self.args)

    @cached_property
    def signature(self) -> Signature:
        return Signature(self.name, self.params, self.positional, description=self.description)

    def cannot(self, before: Shape, after: Shape, args: Mapping[str, object] | None = None) -> str | None:
        reason = self.constraint(before, after) if self.constraint else None
        if reason is None and self.args_constraint is not None:
            reason = self.args_constraint(before, after, args or {})
        return reason

    def layer_plan(self, d: int, b: int, args: Mapping[str, object]) -> list[Layer] | None:
        """The layer plan this operator builds adding b layers to d with `args` (None: it has none)."""
        if self.args_layers is not None:
            return self.args_layers(d, b, args)
        return self.layers(d, b) if self.layers is not None else None


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


def _every_kth(before: Shape, after: Shape) -> str | None:
    added = after.depth - before.depth
    if before.depth % added:
        return (
            f"it adds one copy after every k-th of the {before.depth} layers, so it adds a divisor of "
            f"{before.depth}, not {added}"
        )
    return None


def _multiplies_width(before: Shape, after: Shape) -> str | None:
    if after.width % before.width:
        return f"it multiplies the width by a whole number, and {after.width} is not a multiple of {before.width}"
    return None


def _ranges(args: Mapping[str, object]) -> tuple[tuple[int, int], ...]:
    ranges = args.get("ranges", ())
    assert isinstance(ranges, tuple)
    return ranges


def _ranges_fit(before: Shape, after: Shape, args: Mapping[str, object]) -> str | None:
    ranges = _ranges(args)
    beyond = next(((a, b) for a, b in ranges if b > before.depth), None)
    if beyond is not None:
        return f"the range [{beyond[0]}, {beyond[1]}] goes past the {before.depth} layers the model has"
    total = sum(b - a for a, b in ranges)
    if total != after.depth:
        return f"its ranges hold {total} layers, and the growth asks for {after.depth}"
    return None


def _ranges_plan(d: int, b: int, args: Mapping[str, object]) -> list[Layer]:
    return layers.slices(_ranges(args))


def _upcycled(before: Shape, experts: int, args: Mapping[str, object]) -> MixtureSpec | str:
    if before.moe is not None:
        return f"the model is already a mixture of {before.experts} experts: `duplicate` grows their number"
    assert before.hidden is not None  # the checker gives the MLP's size
    return UpcycleArgs(**args).mixture(experts, before.hidden, before.depth)


def _upcycle_preserves(args: Mapping[str, object]) -> Preserves:
    return UpcycleArgs(**args).preserves()


def _duplicated(before: Shape, experts: int, args: Mapping[str, object]) -> MixtureSpec | str:
    moe = before.moe
    if moe is None:
        return "the model has a dense MLP, no experts to copy: `upcycle` turns it into a mixture"
    if experts % moe.experts:
        return f"it copies each of the {moe.experts} experts a whole number of times: a multiple of {moe.experts}"
    times = experts // moe.experts
    return moe.model_copy(update={"experts": experts, "top_k": moe.top_k * times})


def _noise_preserves(args: Mapping[str, object]) -> Preserves:
    return "no" if args.get("noise") else "yes"


_DEPTH = "lagdsl.ops.depth"
_WIDTH = "lagdsl.ops.width"
_EXPERTS = "lagdsl.ops.experts"

BUILTIN_OPERATORS: tuple[OperatorInfo, ...] = (
    OperatorInfo(
        "copy_top",
        "depth",
        CopyArgs,
        "no",
        "copies of the top b layers, placed on top (gradual stacking)",
        f"{_DEPTH}:copy_top",
        _copies_layers("the top"),
        layers=layers.copy_top,
    ),
    OperatorInfo(
        "copy_bottom",
        "depth",
        CopyArgs,
        "no",
        "copies of the bottom b layers, placed on top",
        f"{_DEPTH}:copy_bottom",
        _copies_layers("the bottom"),
        layers=layers.copy_bottom,
    ),
    OperatorInfo(
        "midas",
        "depth",
        CopyArgs,
        "no",
        "a copy of the middle block of b layers, inserted right after it (MIDAS)",
        f"{_DEPTH}:midas",
        _copies_layers("the middle"),
        layers=layers.midas,
    ),
    OperatorInfo(
        "stack",
        "depth",
        CopyArgs,
        "no",
        "the whole stack repeated on top, in order (progressive stacking)",
        f"{_DEPTH}:stack",
        _whole_stack,
        layers=layers.stack,
    ),
    OperatorInfo(
        "interleave",
        "depth",
        CopyArgs,
        "no",
        "a copy of each of b evenly spaced layers, right after its source",
        f"{_DEPTH}:interleave",
        _copies_layers("one each of"),
        layers=layers.interleave,
    ),
    OperatorInfo(
        "random",
        "depth",
        NoArgs,
        "no",
        "freshly initialized layers on top",
        f"{_DEPTH}:random",
        layers=layers.on_top,
    ),
    OperatorInfo(
        "identity",
        "depth",
        NoArgs,
        "yes",
        "fresh layers on top whose residual output projections are zero",
        f"{_DEPTH}:identity",
        layers=layers.on_top,
    ),
    OperatorInfo(
        "layers",
        "depth",
        LayersArgs,
        "no",
        "the listed ranges of the current layers, in order (mergekit's passthrough slices: SOLAR, Yi)",
        f"{_DEPTH}:layers_",
        args_constraint=_ranges_fit,
        args_layers=_ranges_plan,
        positional=("ranges",),
    ),
    OperatorInfo(
        "llama_pro",
        "depth",
        NoArgs,
        "yes",
        "after every k-th layer a copy of it whose residual output projections are zero (LLaMA Pro)",
        f"{_DEPTH}:llama_pro",
        _every_kth,
        layers=layers.llama_pro,
    ),
    OperatorInfo(
        "net2net",
        "width",
        CopyArgs,
        "yes",
        "copies of random existing units, what reads a copy split among the copies (Net2Net); approximate with "
        "LayerNorm (GPT-2, GPT-NeoX) or a q/k norm over the whole projection (OLMo 2)",
        f"{_WIDTH}:net2net",
    ),
    OperatorInfo(
        "hyperclone",
        "width",
        CloneArgs,
        "yes",
        "width x n, every weight tiled n x n and divided by n, heads x n (HyperCloning)",
        f"{_WIDTH}:hyperclone",
        _multiplies_width,
    ),
    OperatorInfo(
        "zero",
        "width",
        NoArgs,
        "yes",
        "fresh incoming weights, zero outgoing weights, new residual dimensions start at zero; approximate with "
        "LayerNorm (GPT-2, GPT-NeoX) or a q/k norm over the whole projection (OLMo 2)",
        f"{_WIDTH}:zero",
    ),
    OperatorInfo(
        "random",
        "width",
        NoArgs,
        "no",
        "freshly initialized units",
        f"{_WIDTH}:random",
    ),
    OperatorInfo(
        "upcycle",
        "experts",
        UpcycleArgs,
        "yes",
        "each dense MLP a mixture whose experts are its copies (sparse upcycling), or with `granularity` its "
        "slices (virtual groups), with `drop` partly drawn again (Drop-Upcycling); exact with renormalized "
        "top-k weights or a zero router, changed by `noise` and `drop`",
        f"{_EXPERTS}:upcycle",
        mixture=_upcycled,
        preserves_with=_upcycle_preserves,
    ),
    OperatorInfo(
        "duplicate",
        "experts",
        DuplicateArgs,
        "yes",
        "every expert of a mixture copied, with its router row, and top-k multiplied as the experts are",
        f"{_EXPERTS}:duplicate",
        mixture=_duplicated,
        preserves_with=_noise_preserves,
    ),
    *(
        OperatorInfo(
            name,
            "context",
            context_args.ARGS[name],
            preserves,
            description,
            f"lagdsl.ops.context:{name}",
            positions=context_args.positions_plan(name),
        )
        for name, preserves, description in context_args.OPERATORS
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
# Each call's parameters are the fields of the schedule's pydantic model that it builds.

MODELS: dict[str, Signature] = {
    "gpt": Signature(
        "gpt",
        params_of(ModelSpec, "vocab", "context") + params_of(Shape, "width", "heads", "depth", "kv_heads")
        + params_of(ModelSpec, "mlp", "dropout", "tie", "rope_theta") + params_of(GptExperts) + params_of(GptNorm),
        description=(ModelSpec.__doc__ or "").strip().rstrip("."),
    ),
    "pretrained": Signature.of("pretrained", PretrainedCall, positional=("path",)),
}  # fmt: skip

DATA: dict[str, Signature] = {
    "stdlib": Signature.of("stdlib", StdlibData),
    "text": Signature.of("text", TextData, positional=("glob",)),
    "jsonl": Signature.of("jsonl", JsonlData, positional=("glob",)),
    "parquet": Signature.of("parquet", ParquetData, positional=("glob",)),
    "tokens": Signature.of("tokens", TokensData, positional=("train",)),
}

OPTIMIZERS: dict[str, Signature] = {
    "adamw": Signature.of("adamw", AdamW),
    "sgd": Signature.of("sgd", SGD),
}

LR_SCHEDULES: dict[str, Signature] = {
    "constant": Signature.of("constant", LRSpec, "warmup", description="constant after the warmup"),
    "cosine": Signature.of("cosine", LRSpec, "warmup", "min", description="a cosine from the peak down to `min`"),
    "linear": Signature.of("linear", LRSpec, "warmup", "min", description="a straight line down to `min`"),
    "wsd": Signature.of(
        "wsd", LRSpec, "warmup", "decay", "min", required=("decay",),
        description="warmup, stable, then a linear decay to `min` over the last `decay` steps",
    ),
}  # fmt: skip

EVAL_OPTIONS = Signature.of("eval", EvalSpec, "batches")
CHECKPOINT_OPTIONS = Signature.of("checkpoint", CheckpointSpec, "keep")

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS: tuple[str, ...] = get_args(Schedule.model_fields["precision"].annotation)
SELECT_METRICS: tuple[str, ...] = get_args(SelectRule.model_fields["metric"].annotation)
KEEP_MODES: tuple[str, ...] = get_args(ProbeSpec.model_fields["keep"].annotation)
