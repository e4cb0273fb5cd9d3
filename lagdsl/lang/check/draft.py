"""The checker's working state: a `Draft` that each pass reads and fills in.

Every field says which pass produces it. A value that a pass could not resolve stays None, and
later passes skip what depends on it, so one mistake gives one diagnostic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lagdsl.lang import syntax as ast
from lagdsl.lang.catalogue import Catalogue, OperatorInfo
from lagdsl.lang.diagnostics import Diagnostic
from lagdsl.lang.schedule import (
    SGD,
    AdamW,
    CheckpointSpec,
    Dim,
    EvalSpec,
    JsonlData,
    LRSpec,
    ModelSpec,
    ParquetData,
    Part,
    SelectRule,
    Shape,
    StdlibData,
    TextData,
    TokensData,
)
from lagdsl.lang.source import Source, Span

Args = dict[str, object]
Data = StdlibData | TextData | JsonlData | ParquetData | TokensData


@dataclass
class OperatorRef:
    """A resolved reference to an operator: a built-in name, a call, or a user definition."""

    label: str
    func: str
    args: Args
    entries: dict[Dim, OperatorInfo]
    span: Span

    def at(self, span: Span) -> OperatorRef:
        """The same operator, referred to at `span`."""
        return OperatorRef(self.label, self.func, self.args, self.entries, span)


@dataclass
class GrowDraft:
    """One `grow` statement."""

    node: ast.Grow
    # collect
    candidates_node: ast.Candidates | None = None
    probe: ast.Probe | None = None
    select: ast.Select | None = None
    keep: str = "winner"
    # names
    dim: Dim | None = None
    op: OperatorRef | None = None
    candidates: list[OperatorRef] | None = None
    # shapes
    before: Shape | None = None
    after: Shape | None = None
    # budgets
    probe_steps: int | None = None
    rule: SelectRule | None = None
    #: False once any pass found a problem in this growth
    ok: bool = True


@dataclass
class StageDraft:
    """One stage (a `repeat` gives one per repetition)."""

    # collect
    name: str
    node: ast.Stage
    grows: list[GrowDraft] = field(default_factory=list)
    train: ast.Train | None = None
    rewarm: ast.Rewarm | None = None
    reset: ast.Reset | None = None
    lr_scale: ast.LrScale | None = None
    # parts
    freeze: list[tuple[Part, Span]] = field(default_factory=list)
    scales: list[tuple[Part, float]] = field(default_factory=list)
    # shapes
    before: Shape | None = None
    after: Shape | None = None
    # budgets
    train_steps: int | None = None
    rewarm_steps: int = 0


@dataclass
class Every:
    """`eval every N`, `checkpoint every N`, `log every N`: the interval as written, its options,
    and (budgets) the interval in steps."""

    duration: ast.Duration
    options: Args
    steps: int | None = None


@dataclass
class LRCall:
    """`lr NAME(...)` as bound; budgets turns it into an `LRSpec`."""

    kind: str
    args: Args


@dataclass
class Settings:
    """The settings pass's output: each setting's value, None where it is absent or wrong (the
    schedule's defaults then apply)."""

    name: str | None = None
    seed: int | None = None
    device: str | None = None
    precision: str | None = None
    compile: bool | None = None
    parallel: str | None = None
    probes: str | None = None
    activations: str | None = None
    model: ModelSpec | None = None
    data: Data | None = None
    tokenizer_vocab: int | None = None  # the size of the data's tokenizer, when it names one
    batch: int | None = None
    batch_tokens: int | None = None  # `batch N tokens`: rows per step at each context are N / context
    accumulate: int | None = None
    optimizer: AdamW | SGD | None = None
    lr: LRCall | None = None
    eval: Every | None = None
    checkpoint: Every | None = None
    log: Every | None = None


@dataclass
class Draft:
    """A schedule on its way from syntax tree to `Schedule`."""

    source: Source
    module: ast.Module
    catalogue: Catalogue
    #: where the schedule's relative data paths start (default: the source file's folder)
    base: Path | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    # collect
    setting_nodes: dict[str, ast.Setting] = field(default_factory=dict)
    operator_defs: dict[str, ast.OperatorDef] = field(default_factory=dict)
    pool_defs: dict[str, ast.PoolDef] = field(default_factory=dict)
    stages: list[StageDraft] = field(default_factory=list)
    # settings
    settings: Settings = field(default_factory=Settings)
    # names
    operators: dict[str, OperatorRef | None] = field(default_factory=dict)
    pools: dict[str, list[OperatorRef] | None] = field(default_factory=dict)
    failed_lists: set[int] = field(default_factory=set)  # ids of lists with an unresolved item
    # budgets
    total: int | None = None
    total_given: bool = False
    lr: LRSpec | None = None
    eval: EvalSpec | None = None
    checkpoint: CheckpointSpec | None = None
    log_every: int | None = None

    def report(self, code: str, message: str, span: Span, label: str = "", help: str | None = None) -> None:
        """Add a diagnostic; its severity is the code's."""
        self.diagnostics.append(Diagnostic(code, message, span, label, help))

    @property
    def data_base(self) -> Path:
        """The folder that relative data paths (the tokenizer's) are read from."""
        if self.base is not None:
            return self.base
        return Path(self.source.name).parent if not self.source.name.startswith("<") else Path.cwd()

    @property
    def failed(self) -> bool:
        return any(d.is_error for d in self.diagnostics)

    def start_span(self) -> Span:
        """The first line: where a problem of the whole file is shown."""
        text = self.source.line_text(1)
        return Span(1, 1, 1, max(len(text), 1) + 1)
