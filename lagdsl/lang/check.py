"""The checker: a syntax tree in, a `Schedule` (or every diagnostic) out.

It is a tuple of passes, one concern each (`CHECKS`). Each pass reads what earlier passes resolved
into the shared `Context`, appends diagnostics, and never raises for a user's mistake; a value an
earlier pass could not resolve is None, and later passes skip what depends on it, so one mistake
gives one diagnostic.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from lagdsl.lang import layers
from lagdsl.lang import syntax as ast
from lagdsl.lang.catalogue import (
    CHECKPOINT_OPTIONS,
    DATA,
    DEVICES,
    DIMS,
    EVAL_OPTIONS,
    KEEP_MODES,
    LR_SCHEDULES,
    MODELS,
    OPTIMIZERS,
    PRECISIONS,
    SELECT_METRICS,
    Catalogue,
    Dim,
    OperatorInfo,
    default_catalogue,
)
from lagdsl.lang.diagnostics import Diagnostic, did_you_mean, one_of, sort_diagnostics
from lagdsl.lang.params import Param, bind, coerce, show
from lagdsl.lang.schedule import (
    CheckpointSpec,
    EvalSpec,
    Growth,
    LRSpec,
    ModelSpec,
    OperatorSpec,
    ProbeSpec,
    Schedule,
    SelectRule,
    Shape,
    Stage,
)
from lagdsl.lang.source import Source, Span

REQUIRED_SETTINGS = ("model", "batch", "optimizer")
SETTING_EXAMPLES = {
    "model": "model gpt(context=128, width=128, heads=4, depth=2)",
    "batch": "batch 32",
    "optimizer": "optimizer adamw(lr=1e-3)",
}
BYTE_VOCAB = 256
SHORT_PROBE = 5


# ------------------------------------------------------------------------------ working state


@dataclass
class OperatorRef:
    """A resolved reference to an operator: a built-in name, a call, or a user definition."""

    label: str
    func: str
    args: dict[str, object]
    entries: dict[Dim, OperatorInfo]
    span: Span


@dataclass
class GrowDraft:
    node: ast.Grow
    dim: Dim | None = None
    op: OperatorRef | None = None
    candidates: list[OperatorRef] | None = None
    candidates_node: ast.Candidates | None = None
    probe: ast.Probe | None = None
    select: ast.Select | None = None
    keep: str = "winner"
    before: Shape | None = None
    after: Shape | None = None
    probe_steps: int | None = None
    rule: SelectRule | None = None
    ok: bool = True


@dataclass
class StageDraft:
    name: str
    node: ast.Stage
    grows: list[GrowDraft] = field(default_factory=list)
    train: ast.Train | None = None
    rewarm: ast.Rewarm | None = None
    reset: ast.Reset | None = None
    train_steps: int | None = None
    rewarm_steps: int = 0
    before: Shape | None = None
    after: Shape | None = None


@dataclass
class Context:
    source: Source
    module: ast.Module
    catalogue: Catalogue
    diagnostics: list[Diagnostic] = field(default_factory=list)
    settings: dict[str, ast.Setting] = field(default_factory=dict)
    operator_defs: dict[str, ast.OperatorDef] = field(default_factory=dict)
    pool_defs: dict[str, ast.PoolDef] = field(default_factory=dict)
    stages: list[StageDraft] = field(default_factory=list)
    operators: dict[str, OperatorRef | None] = field(default_factory=dict)
    pools: dict[str, list[OperatorRef] | None] = field(default_factory=dict)
    values: dict[str, object] = field(default_factory=dict)
    total: int | None = None
    total_given: bool = False
    failed_lists: set[int] = field(default_factory=set)

    def error(self, code: str, message: str, span: Span, label: str = "", help: str | None = None) -> None:
        self.diagnostics.append(Diagnostic(code, message, span, label, help))

    warn = error  # the code's letter says which

    @property
    def failed(self) -> bool:
        return any(d.is_error for d in self.diagnostics)


def _start_span(source: Source) -> Span:
    text = source.line_text(1)
    return Span(1, 1, 1, max(len(text), 1) + 1)


# ------------------------------------------------------------------------------ pass: collect


def _register(ctx: Context, table: dict, name: str, node: object, span: Span, what: str) -> bool:
    """Add a uniquely named thing to `table`, or report it as a duplicate of the first one."""
    if name not in table:
        table[name] = node
        return True
    code, again, rule = {
        "setting": ("E0102", "set again here", "each setting appears once"),
        "stage": ("E0204", "defined again here", "stage names are unique"),
        "operator": ("E0203", "defined again here", "names are unique per kind"),
        "pool": ("E0203", "defined again here", "names are unique per kind"),
    }[what]
    first = table[name].span.line
    ctx.error(code, f"duplicate {what} `{name}`", span, again, f"`{name}` is first given on line {first}; {rule}")
    return False


def collect(ctx: Context) -> None:
    """Settings, definitions and stages; duplicates; `repeat` expanded; stage structure."""
    stage_names: dict[str, ast.Stage] = {}

    def add_stage(name: str, node: ast.Stage) -> None:
        if _register(ctx, stage_names, name, node, node.name.span, "stage"):
            ctx.stages.append(_stage_structure(ctx, name, node))

    for statement in ctx.module.statements:
        if isinstance(statement, ast.Setting):
            _register(ctx, ctx.settings, statement.key.value, statement, statement.span, "setting")
        elif isinstance(statement, ast.OperatorDef):
            _register(ctx, ctx.operator_defs, statement.name.value, statement, statement.name.span, "operator")
        elif isinstance(statement, ast.PoolDef):
            _register(ctx, ctx.pool_defs, statement.name.value, statement, statement.name.span, "pool")
        elif isinstance(statement, ast.Stage):
            add_stage(statement.name.value, statement)
        else:
            count = _repeat_count(ctx, statement)
            for i in range(1, (count or 0) + 1):
                for inner in statement.body:
                    if isinstance(inner, ast.Repeat):
                        if i == 1:
                            ctx.error(
                                "E0208",
                                "`repeat` inside `repeat`",
                                Span(inner.span.line, inner.span.column, inner.span.line, inner.span.column + 6),
                                "nested here",
                                "repeats may not nest: write the inner stages out, or multiply the counts",
                            )
                        continue
                    add_stage(f"{inner.name.value}_{i}", inner)

    for key in REQUIRED_SETTINGS:
        if key not in ctx.settings:
            ctx.error(
                "E0103",
                f"missing required setting `{key}`",
                _start_span(ctx.source),
                "in this schedule",
                f"add a line such as `{SETTING_EXAMPLES[key]}`",
            )
    if not ctx.stages and not any(isinstance(s, ast.Repeat) for s in ctx.module.statements):
        ctx.error(
            "E0105",
            "the schedule has no stages",
            _start_span(ctx.source),
            "in this schedule",
            "add a stage such as `stage base { train 1000 steps }`",
        )


def _repeat_count(ctx: Context, node: ast.Repeat) -> int | None:
    value, problem = coerce(Param("repeat", "int", ge=1), node.count, None)
    if problem:
        ctx.diagnostics.append(problem)
        return None
    return value  # type: ignore[return-value]


def _stage_structure(ctx: Context, name: str, node: ast.Stage) -> StageDraft:
    draft = StageDraft(name, node)
    first_train: ast.Train | None = None
    for item in node.items:
        if isinstance(item, ast.Grow):
            if first_train is not None:
                ctx.error(
                    "E0108",
                    f"`grow` after `train` in stage `{name}`",
                    item.span,
                    "after the stage's `train`",
                    "a stage grows first, then trains: move this `grow` above the `train`",
                )
            draft.grows.append(_grow_structure(ctx, name, item))
            continue
        slot = {ast.Train: "train", ast.Rewarm: "rewarm", ast.Reset: "reset"}[type(item)]
        word = "reset optimizer" if slot == "reset" else slot
        if getattr(draft, slot) is not None:
            ctx.error("E0106", f"duplicate `{word}` in stage `{name}`", item.span, "given again", None)
            continue
        setattr(draft, slot, item)
        if isinstance(item, ast.Train):
            first_train = item
    if draft.train is None:
        ctx.error(
            "E0107",
            f"stage `{name}` has no `train`",
            node.name.span,
            "no `train` in this stage",
            "every stage ends with one `train`, such as `train 500 steps`",
        )
    return draft


def _grow_structure(ctx: Context, stage: str, node: ast.Grow) -> GrowDraft:
    draft = GrowDraft(node)
    if node.block is None:
        return draft
    seen: dict[type, ast.ProbeItem] = {}
    for item in node.block.items:
        if type(item) in seen:
            word = type(item).__name__.lower()
            ctx.error("E0106", f"duplicate `{word}` in a probe block", item.span, "given again")
            continue
        seen[type(item)] = item
    draft.candidates_node = seen.get(ast.Candidates)  # type: ignore[assignment]
    draft.probe = seen.get(ast.Probe)  # type: ignore[assignment]
    draft.select = seen.get(ast.Select)  # type: ignore[assignment]
    keep = seen.get(ast.Keep)
    head = Span(node.span.line, node.span.column, node.span.line, node.span.column + 4)
    for needed, example in ((ast.Candidates, "candidates [copy_top, midas]"), (ast.Probe, "probe 25 steps")):
        if needed not in seen:
            word = needed.__name__.lower()
            ctx.error(
                "E0107",
                f"the probe block in stage `{stage}` has no `{word}`",
                head,
                f"no `{word}` in this block",
                f"add `{example}` inside the braces",
            )
            draft.ok = False
    if keep is not None:
        mode = keep.mode.value  # type: ignore[union-attr]
        if mode in KEEP_MODES:
            draft.keep = mode
        else:
            ctx.error(
                "E0104",
                f"unknown keep mode `{mode}`",
                keep.mode.span,
                f"expected {one_of(KEEP_MODES)}",  # type: ignore[union-attr]
                did_you_mean(mode, KEEP_MODES),
            )
    return draft


# ------------------------------------------------------------------------------ pass: settings


def check_settings(ctx: Context) -> None:
    """Every setting's value: types, choices, ranges, and the model's shape."""
    values = ctx.values
    for key, setting in ctx.settings.items():
        handler = _SETTING_HANDLERS[key]
        result = handler(ctx, setting)
        if result is not None:
            values[key] = result
    if "data" not in ctx.settings:
        values["data"] = ("stdlib", {p.name: p.default for p in DATA["stdlib"].params})
    model = values.get("model")
    if isinstance(model, dict) and model.get("vocab") == "auto" and "data" in values:
        kind = values["data"][0]  # type: ignore[index]
        if kind == "tokens":
            setting = ctx.settings["model"]
            ctx.error(
                "E0306",
                "`vocab=auto` needs byte data, and this schedule reads `tokens`",
                setting.value.span,
                "vocabulary unknown",
                "give the tokenizer's size, such as `vocab=50304`",
            )
            values.pop("model")
        else:
            model["vocab"] = BYTE_VOCAB


def _single(param: Param):
    def handle(ctx: Context, setting: ast.Setting) -> object | None:
        value, problem = coerce(param, setting.value, None)
        if problem:
            ctx.diagnostics.append(problem)
        return value

    return handle


def _choice_of(kind: str, table: dict, setting: ast.Setting, ctx: Context) -> str | None:
    node = setting.value
    name_node = node.func if isinstance(node, ast.Call) else node
    name = name_node.value  # type: ignore[union-attr]
    if name not in table:
        ctx.error(
            "E0104",
            f"unknown {kind} `{name}`",
            name_node.span,
            f"not a{'n' if kind[0] in 'aeiou' else ''} {kind}",
            did_you_mean(name, table) or f"the {kind}s are {one_of(table)}",
        )
        return None
    return name


def _handle_call(kind: str, table: dict):
    def handle(ctx: Context, setting: ast.Setting) -> object | None:
        name = _choice_of(kind, table, setting, ctx)
        if name is None:
            return None
        args = bind(table[name], setting.value, ctx.diagnostics)  # type: ignore[arg-type]
        return None if args is None else (name, args)

    return handle


def _handle_model(ctx: Context, setting: ast.Setting) -> object | None:
    result = _handle_call("model", MODELS)(ctx, setting)
    if result is None:
        return None
    _, args = result  # type: ignore[misc]
    if args["width"] % args["heads"]:
        ctx.error(
            "E0303",
            f"`width` {args['width']} is not divisible by `heads` {args['heads']}",
            setting.value.span,
            "width / heads must be a whole head size",
            f"try `heads={_nearest_divisor(args['width'], args['heads'])}`"
            f" or a width that is a multiple of {args['heads']}",
        )
        return None
    return args


def _nearest_divisor(n: int, near: int) -> int:
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - near), d))


def _handle_device(ctx: Context, setting: ast.Setting) -> object | None:
    node = setting.value
    word = node.value  # type: ignore[union-attr]
    if isinstance(node, ast.Name) and word in DEVICES:
        return word
    if isinstance(node, ast.String) and re.fullmatch(r"cpu|cuda(:[0-9]+)?", word):
        return word
    ctx.error(
        "E0104",
        f"unknown device `{show(node)}`",
        node.span,
        "not a device",
        did_you_mean(str(word), DEVICES) or 'write `auto`, `cpu`, `cuda` or a string such as `"cuda:1"`',
    )
    return None


def _handle_batch(ctx: Context, setting: ast.Setting) -> object | None:
    batch, problem = coerce(Param("batch", "int", ge=1), setting.value, None)
    if problem:
        ctx.diagnostics.append(problem)
    accumulate = 1
    for arg in setting.extra:
        accumulate, problem = coerce(Param("accumulate", "int", ge=1), arg.value, None)  # type: ignore[assignment]
        if problem:
            ctx.diagnostics.append(problem)
    if batch is None or accumulate is None:
        return None
    return (batch, accumulate)


def _handle_every(options: object):
    def handle(ctx: Context, setting: ast.Setting) -> object | None:
        args: dict[str, object] | None = {}
        if options is not None:
            call = ast.Call(ast.Name(setting.key.value, setting.key.span), setting.extra, setting.span)
            args = bind(options, call, ctx.diagnostics)  # type: ignore[arg-type]
        return None if args is None else (setting.value, args)

    return handle


def _handle_total(ctx: Context, setting: ast.Setting) -> object | None:
    return setting.value


_SETTING_HANDLERS = {
    "schedule": lambda ctx, s: s.value.value,
    "seed": _single(Param("seed", "int", ge=0)),
    "device": _handle_device,
    "precision": _single(Param("precision", "choice", choices=PRECISIONS)),
    "compile": _single(Param("compile", "bool", help="write `compile on` or `compile off`")),
    "model": _handle_model,
    "data": _handle_call("data source", DATA),
    "batch": _handle_batch,
    "optimizer": _handle_call("optimizer", OPTIMIZERS),
    "lr": _handle_call("learning-rate schedule", LR_SCHEDULES),
    "total": _handle_total,
    "eval": _handle_every(EVAL_OPTIONS),
    "checkpoint": _handle_every(CHECKPOINT_OPTIONS),
    "log": _handle_every(None),
}


# ------------------------------------------------------------------------------ pass: names


def resolve_names(ctx: Context) -> None:
    """Operators, pools and candidates resolved; dimensions, select rules and statements named."""
    for name, definition in ctx.operator_defs.items():
        ctx.operators[name] = _resolve_builtin(ctx, definition.op, label=name)
    for name, pool in ctx.pool_defs.items():
        ctx.pools[name] = _resolve_list(ctx, pool.items, f"pool `{name}`")
    for stage in ctx.stages:
        if stage.reset is not None and stage.reset.target.value != "optimizer":
            word = stage.reset.target.value
            ctx.error(
                "E0104",
                f"unknown reset target `{word}`",
                stage.reset.target.span,
                "expected `optimizer`",
                did_you_mean(word, ["optimizer"]) or "the statement is `reset optimizer`",
            )
        for grow in stage.grows:
            _resolve_grow(ctx, stage, grow)


def _unknown_operator(ctx: Context, name: ast.Name) -> None:
    known = list(ctx.catalogue.names()) + list(ctx.operator_defs)
    help_text = did_you_mean(name.value, known) or "`lagdsl ops` lists the operators"
    if ctx.catalogue.problems:
        help_text += "; " + "; ".join(ctx.catalogue.problems)
    ctx.error("E0201", f"unknown operator `{name.value}`", name.span, "not an operator", help_text)


def _resolve_builtin(ctx: Context, node: ast.Value, label: str) -> OperatorRef | None:
    """A built-in operator, bare (`midas`) or called (`copy_top(noise=0.1)`)."""
    func = node.func if isinstance(node, ast.Call) else node
    if not isinstance(func, ast.Name):
        ctx.error("E0301", f"expected an operator, found `{show(node)}`", node.span, "not an operator")
        return None
    entries = ctx.catalogue.lookup(func.value)
    if not entries:
        if func.value in ctx.operator_defs and isinstance(node, ast.Call):
            ctx.error(
                "E0210",
                f"`{func.value}` is an operator defined in this file, not a built-in one",
                func.span,
                "its arguments are fixed where it is defined",
                f"write `{func.value}` alone, or call a built-in operator",
            )
        elif func.value in ctx.pool_defs:
            ctx.error(
                "E0210",
                f"`{func.value}` is a pool, not an operator",
                func.span,
                "a pool",
                "pools are used with `candidates`",
            )
        else:
            _unknown_operator(ctx, func)
        return None
    args = bind(entries[0].signature, node, ctx.diagnostics)  # type: ignore[arg-type]
    if args is None:
        return None
    return OperatorRef(label, func.value, args, {e.dim: e for e in entries}, node.span)


def _resolve_ref(ctx: Context, node: ast.Value) -> OperatorRef | None:
    """A user-defined operator name or a built-in operator."""
    if isinstance(node, ast.Name) and node.value in ctx.operator_defs:
        ref = ctx.operators.get(node.value)
        if ref is None:
            return None
        return OperatorRef(ref.label, ref.func, ref.args, ref.entries, node.span)
    return _resolve_builtin(ctx, node, label=show(node))


def _resolve_list(ctx: Context, items: ast.List, where: str) -> list[OperatorRef] | None:
    refs: list[OperatorRef] = []
    ok = True
    for item in items.items:
        ref = _resolve_ref(ctx, item)
        if ref is None:
            ok = False
            continue
        if any(r.label == ref.label for r in refs):
            ctx.error(
                "E0209",
                f"`{ref.label}` is listed twice in {where}",
                item.span,
                "listed again",
                "each candidate is tried once: remove the copy",
            )
            ok = False
            continue
        refs.append(ref)
    if not items.items:
        ctx.error("E0302", f"{where} is empty", items.span, "no candidates", "list at least two operators")
        return None
    if len(items.items) == 1:
        ctx.warn(
            "W0201",
            f"{where} has only one candidate",
            items.span,
            "one candidate",
            "with one candidate there is nothing to choose: write `with OP`, or add candidates",
        )
    if not ok:
        ctx.failed_lists.add(id(items))
    return refs  # the ones that resolved: later passes still check them


def _resolve_grow(ctx: Context, stage: StageDraft, grow: GrowDraft) -> None:
    node = grow.node
    if node.dim.value in DIMS:
        grow.dim = node.dim.value  # type: ignore[assignment]
    else:
        ctx.error(
            "E0104",
            f"unknown dimension `{node.dim.value}`",
            node.dim.span,
            "expected `depth` or `width`",
            did_you_mean(node.dim.value, DIMS),
        )
        grow.ok = False
    if node.op is not None:
        grow.op = _resolve_ref(ctx, node.op)
        grow.ok &= grow.op is not None
    if grow.candidates_node is not None:
        value = grow.candidates_node.value
        if isinstance(value, ast.List):
            grow.candidates = _resolve_list(ctx, value, "the candidate list")
            grow.ok &= id(value) not in ctx.failed_lists
        elif value.value in ctx.pool_defs:
            grow.candidates = ctx.pools.get(value.value)
            grow.ok &= id(ctx.pool_defs[value.value].items) not in ctx.failed_lists
            if grow.candidates is not None:
                grow.candidates = [OperatorRef(r.label, r.func, r.args, r.entries, value.span) for r in grow.candidates]
        elif value.value in ctx.operator_defs or ctx.catalogue.lookup(value.value):
            ctx.error(
                "E0210",
                f"`{value.value}` is an operator, not a pool",
                value.span,
                "an operator",
                f"list the candidates, such as `candidates [{value.value}, ...]`",
            )
        else:
            ctx.error(
                "E0202",
                f"unknown pool `{value.value}`",
                value.span,
                "not a pool",
                did_you_mean(value.value, ctx.pool_defs) or "define it with `pool NAME = [op, op]`",
            )
        grow.ok &= grow.candidates is not None
    if grow.select is not None:
        direction, metric = grow.select.direction, grow.select.metric
        if direction.value != "lowest":
            ctx.error(
                "E0104",
                f"unknown selection `{direction.value}`",
                direction.span,
                "expected `lowest`",
                did_you_mean(direction.value, ["lowest"]) or "the rule is `select lowest METRIC`",
            )
            grow.ok = False
        if metric.value not in SELECT_METRICS:
            ctx.error(
                "E0207",
                f"unknown selection metric `{metric.value}`",
                metric.span,
                "not a metric",
                did_you_mean(metric.value, SELECT_METRICS) or f"the metrics are {one_of(SELECT_METRICS)}",
            )
            grow.ok = False


# ------------------------------------------------------------------------------ pass: shapes


def check_shapes(ctx: Context) -> None:
    """The model's shape through every growth; what each operator can perform."""
    model = ctx.values.get("model")
    if not isinstance(model, dict):
        return
    shape = Shape(depth=model["depth"], width=model["width"], heads=model["heads"])
    for stage in ctx.stages:
        stage.before = shape
        for grow in stage.grows:
            grow.before = shape
            after = _grown_shape(ctx, stage, grow, shape)
            if after is None:
                stage.after = None
                return  # later shapes are unknown: checking them would only repeat this error
            grow.after = after
            _check_operators(ctx, stage, grow)
            shape = after
        stage.after = shape


def _grown_shape(ctx: Context, stage: StageDraft, grow: GrowDraft, shape: Shape) -> Shape | None:
    node = grow.node
    if grow.dim is None:
        return None
    amount, problem = coerce(Param(f"grow {node.mode}", "int"), node.amount, None)
    if problem:
        ctx.diagnostics.append(problem)
        return None
    current = shape.depth if grow.dim == "depth" else shape.width
    target = current + amount if node.mode == "by" else amount  # type: ignore[operator]
    if target <= current:
        say = f"by {amount}" if node.mode == "by" else f"to {amount}"
        ctx.error(
            "E0401",
            f"`grow {grow.dim} {say}` does not grow the model",
            node.amount.span,
            f"the {grow.dim} is already {current} here",
            f"write `grow {grow.dim} to N` with N above {current}, or `grow {grow.dim} by N` with N at least 1",
        )
        return None
    if grow.dim == "depth":
        after = Shape(depth=target, width=shape.width, heads=shape.heads)
        if target > 4 * current:
            ctx.warn(
                "W0401",
                f"growing depth {current} -> {target} in one step is more than 4x",
                node.amount.span,
                "a large step",
                "split it over several stages",
            )
        return after
    head = shape.head_size
    if target % head:
        lower, upper = target // head * head, (target // head + 1) * head
        options = [w for w in (lower, upper) if w > current]
        ctx.error(
            "E0404",
            f"width {target} is not a multiple of the head size {head}",
            node.amount.span,
            "the head size stays fixed as the model widens",
            f"try {' or '.join(f'`{w}`' for w in options)}" + (" (as a target with `to`)" if node.mode == "by" else ""),
        )
        return None
    if target > 2 * current:
        ctx.warn(
            "W0401",
            f"growing width {current} -> {target} in one step is more than 2x",
            node.amount.span,
            "a large step",
            "split it over several stages",
        )
    return Shape(depth=shape.depth, width=target, heads=target // head)


def _check_operators(ctx: Context, stage: StageDraft, grow: GrowDraft) -> None:
    refs = [grow.op] if grow.op is not None else list(grow.candidates or [])
    for ref in refs:
        entry = ref.entries.get(grow.dim)  # type: ignore[arg-type]
        if entry is None:
            dims = " and ".join(ref.entries)
            ctx.error(
                "E0402",
                f"operator `{ref.func}` cannot grow {grow.dim}",
                ref.span,
                f"grows {dims} only",
                f"`lagdsl ops` lists the operators that grow {grow.dim}",
            )
            grow.ok = False
            continue
        reason = entry.cannot(grow.before, grow.after)  # type: ignore[arg-type]
        if reason:
            before = getattr(grow.before, grow.dim)
            after = getattr(grow.after, grow.dim)
            ctx.error(
                "E0403",
                f"`{ref.label}` cannot grow {grow.dim} {before} -> {after}",
                ref.span,
                reason,
                "choose another operator, or change the growth",
            )
            grow.ok = False
    if grow.ok and grow.candidates is not None:
        _check_same_models(ctx, grow)


def _check_same_models(ctx: Context, grow: GrowDraft) -> None:
    """Warn where two candidates build the same model: the same layer plan, every added layer a
    copy, no noise (fresh layers and noise are drawn from each candidate's own generator)."""
    if grow.dim != "depth":
        return
    before, after = grow.before.depth, grow.after.depth  # type: ignore[union-attr]
    first: dict[tuple[object, ...], OperatorRef] = {}
    for ref in grow.candidates or []:
        entry = ref.entries.get("depth")
        if entry is None or entry.layers is None or float(ref.args.get("noise", 0.0) or 0.0) != 0.0:  # type: ignore[arg-type]
            continue
        plan = layers.normalize(entry.layers(before, after - before))
        if any(run.source is None for run in plan):
            continue
        key = tuple(plan)
        same = first.setdefault(key, ref)
        if same is ref:
            continue
        ctx.warn(
            "W0202",
            f"candidates `{same.label}` and `{ref.label}` build the same model here",
            ref.span,
            f"the same as `{same.label}`",
            f"growing depth {before} -> {after}, both build {layers.describe(plan)}; the probe would train "
            f"one model twice: drop one, or give one `noise`",
        )


# ------------------------------------------------------------------------------ pass: budgets


class _Steps:
    """Converts durations to steps for one schedule, reporting what cannot be converted."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        model = ctx.values.get("model")
        batch = ctx.values.get("batch")
        self.tokens_per_step = (
            batch[0] * batch[1] * model["context"] if isinstance(model, dict) and batch else None  # type: ignore[index]
        )

    def __call__(
        self, duration: ast.Duration | int, what: str, *, minimum: int = 1, percent: bool = True
    ) -> int | None:
        ctx = self.ctx
        if isinstance(duration, int):
            return duration
        amount = duration.amount.value
        shown = show(duration)
        if duration.unit == "%":
            if not percent:
                ctx.error(
                    "E0301",
                    f"{what} cannot be a share of `total`, found `{shown}`",
                    duration.span,
                    "not a share",
                    "write it in `steps` or `tokens`",
                )
                return None
            if not ctx.total_given:
                ctx.error(
                    "E0501",
                    f"{what} is `{shown}` of a `total` that the schedule does not set",
                    duration.span,
                    "a share of nothing",
                    "add `total N steps` (or tokens), or write this in steps",
                )
                return None
            if not 0 <= amount <= 100:
                ctx.error(
                    "E0302", f"{what} must be between 0% and 100%, found `{shown}`", duration.span, "out of range"
                )
                return None
            if ctx.total is None:
                return None
            steps = math.floor(amount / 100 * ctx.total + 0.5)
        elif duration.unit == "steps":
            if isinstance(amount, float) and not amount.is_integer():
                ctx.error(
                    "E0301",
                    f"{what} must be a whole number of steps, found `{shown}`",
                    duration.span,
                    "not whole",
                )
                return None
            steps = int(amount)
        else:
            if self.tokens_per_step is None:
                return None
            steps = math.ceil(amount / self.tokens_per_step)
            if steps * self.tokens_per_step != amount and amount > 0:
                ctx.warn(
                    "W0501",
                    f"`{shown}` is not a whole number of steps: rounded up to {steps}",
                    duration.span,
                    f"{self.tokens_per_step} tokens per step",
                    "tokens per step = batch x accumulate x context",
                )
        if steps < minimum:
            least = "at least 1 step" if minimum == 1 else f"at least {minimum} steps"
            ctx.error("E0302", f"{what} must be {least}, found `{shown}`", duration.span, "out of range")
            return None
        return steps


def check_budgets(ctx: Context) -> None:
    """Durations to steps; `%` against `total`; stages against `total`; probes against trains."""
    total_setting = ctx.settings.get("total")
    steps = _Steps(ctx)
    if total_setting is not None:
        ctx.total_given = True
        ctx.total = steps(total_setting.value, "`total`", percent=False)  # type: ignore[arg-type]

    _stage_budgets(ctx, steps, total_setting)
    for stage in ctx.stages:
        if stage.rewarm is not None:
            stage.rewarm_steps = steps(stage.rewarm.duration, "`rewarm`") or 0
        used = 0
        for grow in stage.grows:
            if grow.probe is None:
                continue
            grow.probe_steps = steps(grow.probe.duration, "`probe`", minimum=0)
            if grow.probe_steps is None:
                continue
            k = grow.probe_steps
            if 0 < k < SHORT_PROBE:
                ctx.warn(
                    "W0301",
                    f"a probe of {k} step{'s' if k > 1 else ''} is short",
                    grow.probe.duration.span,
                    "shorter than 5 steps",
                    "the loss after a few more steps ranks operators better; try `probe 25 steps`",
                )
            grow.rule = _select_rule(ctx, grow, steps)
            if grow.keep == "winner":
                used += k
                if stage.train_steps is not None and used > stage.train_steps:
                    ctx.error(
                        "E0304",
                        f"the probe is longer than stage `{stage.name}`'s `train` of {stage.train_steps} steps",
                        grow.probe.duration.span,
                        "the winner's probe steps count toward the stage",
                        "shorten the probe, lengthen the `train`, or `keep rewind`",
                    )
    _setting_budgets(ctx, steps)


def _stage_budgets(ctx: Context, steps: _Steps, total_setting: ast.Setting | None) -> None:
    trains = [s for s in ctx.stages if s.train is not None]
    if not trains:
        return
    last = trains[-1]
    for stage in trains:
        stage.train_steps = steps(stage.train.duration, "`train`")  # type: ignore[union-attr]
    if any(s.train_steps is None for s in trains) and ctx.total is None:
        return
    written = sum(s.train_steps or 0 for s in trains)
    if not ctx.total_given:
        ctx.total = written
        return
    if ctx.total is None or any(s.train_steps is None for s in trains):
        return
    assert total_setting is not None
    if last.train.duration.unit == "%":  # type: ignore[union-attr]
        others = written - last.train_steps  # type: ignore[operator]
        remainder = ctx.total - others
        slack = sum(1 for s in trains if s.train.duration.unit == "%")  # type: ignore[union-attr]
        if remainder >= 1 and abs(remainder - last.train_steps) <= slack:  # type: ignore[operator]
            last.train_steps = remainder
            return
        written_pct = sum(
            float(s.train.duration.amount.value)
            for s in trains
            if s.train.duration.unit == "%"  # type: ignore[union-attr]
        )
        detail = (
            f"the shares add up to {written_pct:g}%"
            if all(
                s.train.duration.unit == "%"
                for s in trains  # type: ignore[union-attr]
            )
            else f"the stages add up to {written} steps"
        )
    else:
        if written == ctx.total:
            return
        detail = f"the stages add up to {written} steps"
    ctx.error(
        "E0502",
        f"the stages do not sum to `total` ({ctx.total} steps): {detail}",
        total_setting.span,
        "the budget",
        "change the stages' `train`, or `total`, so that they agree",
    )


def _select_rule(ctx: Context, grow: GrowDraft, steps: _Steps) -> SelectRule | None:
    k = grow.probe_steps or 0
    select = grow.select
    metric = select.metric.value if select is not None else "loss"
    if metric not in SELECT_METRICS:
        return None
    if select is not None and select.window is not None:
        if metric != "loss" or k == 0:
            why = (
                "a probe of 0 steps has no steps to average"
                if k == 0
                else "`val_loss` is measured once, after the probe"
            )
            ctx.error(
                "E0305",
                f"`over last` does not apply here: {why}",
                select.window.span,
                "no window here",
                "write `select lowest loss over last N steps` with a probe of at least N steps"
                if k == 0
                else "write `select lowest val_loss`",
            )
            return None
        window = steps(select.window, "the selection window", percent=False)
        if window is None:
            return None
        if window > k:
            ctx.error(
                "E0302",
                f"the selection window of {window} steps is longer than the probe of {k}",
                select.window.span,
                "longer than the probe",
                f"use at most `over last {k} steps`",
            )
            return None
        return SelectRule(metric="loss", window=window)
    if metric == "val_loss":
        return SelectRule(metric="val_loss", window=None)
    if k == 0:
        return SelectRule(metric="loss", window=None)  # the loss right after growth
    if select is not None:
        return SelectRule(metric="loss", window=1)  # `lowest loss`: the last probe step's loss
    return SelectRule(metric="loss", window=max(1, k // 5))  # the default rule


def _setting_budgets(ctx: Context, steps: _Steps) -> None:
    values = ctx.values
    lr = values.get("lr")
    if lr is not None:
        name, args = lr  # type: ignore[misc]
        warmup = steps(args["warmup"], "`warmup`", minimum=0)
        decay = steps(args["decay"], "`decay`") if "decay" in args else 0
        if warmup is not None and decay is not None:
            values["lr"] = LRSpec(kind=name, warmup=warmup, min=args.get("min", 0.0), decay=decay)
            if ctx.total is not None and warmup + decay > ctx.total:
                ctx.error(
                    "E0302",
                    f"the LR warmup and decay ({warmup + decay} steps) are longer than the run ({ctx.total})",
                    ctx.settings["lr"].value.span,
                    "longer than `total`",
                )
        else:
            values.pop("lr")
    optimizer = values.get("optimizer")
    if isinstance(values.get("lr"), LRSpec) and optimizer is not None:
        peak = optimizer[1]["lr"]  # type: ignore[index]
        if values["lr"].min > peak:  # type: ignore[union-attr]
            ctx.error(
                "E0302",
                f"the LR's `min` {values['lr'].min:g} is above the optimizer's `lr` {peak:g}",  # type: ignore[union-attr]
                ctx.settings["lr"].value.span,
                "min above the peak",
            )
    for key in ("eval", "checkpoint", "log"):
        if key in values:
            duration, options = values[key]  # type: ignore[misc]
            every = steps(duration, f"`{key} every`", percent=False)
            values[key] = None if every is None else (every, options)


# ------------------------------------------------------------------------------ assembly

CHECKS = (collect, check_settings, resolve_names, check_shapes, check_budgets)


def _operator_spec(ref: OperatorRef, dim: Dim) -> OperatorSpec:
    entry = ref.entries[dim]
    return OperatorSpec(name=ref.func, dim=dim, args=ref.args, label=ref.label, preserves=entry.preserves)  # type: ignore[arg-type]


def assemble(ctx: Context) -> Schedule:
    """The `Schedule`, once every pass ran clean."""
    v = ctx.values
    model = v["model"]
    stages = []
    step = 0
    for index, draft in enumerate(ctx.stages):
        growths = []
        for grow in draft.grows:
            probe = None
            if grow.candidates is not None:
                probe = ProbeSpec(
                    candidates=tuple(_operator_spec(r, grow.dim) for r in grow.candidates),  # type: ignore[arg-type]
                    steps=grow.probe_steps,  # type: ignore[arg-type]
                    select=grow.rule,  # type: ignore[arg-type]
                    keep=grow.keep,  # type: ignore[arg-type]
                )
            growths.append(
                Growth(
                    dim=grow.dim,  # type: ignore[arg-type]
                    before=grow.before,  # type: ignore[arg-type]
                    after=grow.after,  # type: ignore[arg-type]
                    op=_operator_spec(grow.op, grow.dim) if grow.op is not None else None,  # type: ignore[arg-type]
                    probe=probe,
                    line=grow.node.span.line,
                )
            )
        stages.append(
            Stage(
                name=draft.name,
                index=index,
                start_step=step,
                train_steps=draft.train_steps,  # type: ignore[arg-type]
                growths=tuple(growths),
                rewarm=draft.rewarm_steps,
                reset_optimizer=draft.reset is not None,
                before=draft.before,  # type: ignore[arg-type]
                after=draft.after,  # type: ignore[arg-type]
                line=draft.node.span.line,
            )
        )
        step += draft.train_steps  # type: ignore[operator]
    batch, accumulate = v["batch"]  # type: ignore[misc]
    data_kind, data_args = v["data"]  # type: ignore[misc]
    optimizer_name, optimizer_args = v["optimizer"]  # type: ignore[misc]
    eval_setting = v.get("eval")
    checkpoint = v.get("checkpoint")
    log = v.get("log")
    return Schedule(
        name=v.get("schedule") or _stem(ctx.source.name),  # type: ignore[arg-type]
        file=ctx.source.name,
        seed=v.get("seed", 0),  # type: ignore[arg-type]
        device=v.get("device", "auto"),  # type: ignore[arg-type]
        precision=v.get("precision", "auto"),  # type: ignore[arg-type]
        compile=v.get("compile", False),  # type: ignore[arg-type]
        model=ModelSpec(
            vocab=model["vocab"],  # type: ignore[index]
            context=model["context"],  # type: ignore[index]
            shape=Shape(depth=model["depth"], width=model["width"], heads=model["heads"]),  # type: ignore[index]
            mlp=model["mlp"],  # type: ignore[index]
            dropout=model["dropout"],  # type: ignore[index]
        ),
        data={"kind": data_kind, **data_args},
        batch=batch,
        accumulate=accumulate,
        optimizer={"name": optimizer_name, **optimizer_args},
        lr=v.get("lr", LRSpec()),  # type: ignore[arg-type]
        total_steps=ctx.total,  # type: ignore[arg-type]
        eval=EvalSpec(every=eval_setting[0], **eval_setting[1]) if eval_setting else None,  # type: ignore[index]
        checkpoint=CheckpointSpec(every=checkpoint[0], **checkpoint[1]) if checkpoint else CheckpointSpec(),  # type: ignore[index]
        log_every=log[0] if log else 1,  # type: ignore[index]
        stages=tuple(stages),
    )


def _stem(name: str) -> str:
    from pathlib import PurePath

    return PurePath(name).stem or "schedule"


def check(
    module: ast.Module, source: Source, catalogue: Catalogue | None = None
) -> tuple[Schedule | None, list[Diagnostic]]:
    """Run every pass; the `Schedule` when there is no error, and all diagnostics sorted."""
    ctx = Context(source, module, catalogue or default_catalogue())
    for check_pass in CHECKS:
        check_pass(ctx)
    diagnostics = sort_diagnostics(ctx.diagnostics)
    if ctx.failed:
        return None, diagnostics
    return assemble(ctx), diagnostics
