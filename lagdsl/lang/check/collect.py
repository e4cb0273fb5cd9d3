"""Pass: collect. Settings, definitions and stages, each named once; `repeat` expanded; each stage's
and probe block's statements in their slots."""

from __future__ import annotations

from typing import Protocol, TypeVar

from lagdsl.lang import syntax as ast
from lagdsl.lang.catalogue import KEEP_MODES
from lagdsl.lang.check.draft import Draft, GrowDraft, StageDraft
from lagdsl.lang.diagnostics import did_you_mean, one_of
from lagdsl.lang.params import Param, coerce
from lagdsl.lang.schedule import MAX_STAGES
from lagdsl.lang.source import Span

REQUIRED_SETTINGS = ("model", "batch", "optimizer")
SETTING_EXAMPLES = {
    "model": "model gpt(context=128, width=128, heads=4, depth=2)",
    "batch": "batch 32",
    "optimizer": "optimizer adamw(lr=1e-3)",
}
REPEAT = Param("repeat", "int", ge=1, le=MAX_STAGES)

_DUPLICATES = {
    "setting": ("E0102", "set again here", "each setting appears once"),
    "stage": ("E0204", "defined again here", "stage names are unique"),
    "operator": ("E0203", "defined again here", "names are unique per kind"),
    "pool": ("E0203", "defined again here", "names are unique per kind"),
}


class _Spanned(Protocol):
    @property
    def span(self) -> Span: ...


Named = TypeVar("Named", bound=_Spanned)


def _register(draft: Draft, table: dict[str, Named], name: str, node: Named, span: Span, what: str) -> bool:
    """Add a uniquely named thing to `table`, or report it as a duplicate of the first one."""
    if name not in table:
        table[name] = node
        return True
    code, again, rule = _DUPLICATES[what]
    first = table[name].span.line
    draft.report(code, f"duplicate {what} `{name}`", span, again, f"`{name}` is first given on line {first}; {rule}")
    return False


def collect(draft: Draft) -> Draft:
    """Settings, definitions and stages; duplicates; `repeat` expanded; stage structure."""
    stage_names: dict[str, ast.Stage] = {}

    too_many: list[ast.Stage] = []

    def add_stage(name: str, node: ast.Stage) -> None:
        if len(draft.stages) >= MAX_STAGES:
            too_many.append(node)
            return
        if _register(draft, stage_names, name, node, node.name.span, "stage"):
            draft.stages.append(_stage_structure(draft, name, node))

    for statement in draft.module.statements:
        if isinstance(statement, ast.Setting):
            _register(draft, draft.setting_nodes, statement.key.value, statement, statement.span, "setting")
        elif isinstance(statement, ast.OperatorDef):
            _register(draft, draft.operator_defs, statement.name.value, statement, statement.name.span, "operator")
        elif isinstance(statement, ast.PoolDef):
            _register(draft, draft.pool_defs, statement.name.value, statement, statement.name.span, "pool")
        elif isinstance(statement, ast.Stage):
            add_stage(statement.name.value, statement)
        else:
            count = _repeat_count(draft, statement)
            for i in range(1, (count or 0) + 1):
                if too_many:
                    break
                for inner in statement.body:
                    if isinstance(inner, ast.Repeat):
                        if i == 1:
                            draft.report(
                                "E0208",
                                "`repeat` inside `repeat`",
                                Span(inner.span.line, inner.span.column, inner.span.line, inner.span.column + 6),
                                "nested here",
                                "repeats may not nest: write the inner stages out, or multiply the counts",
                            )
                        continue
                    add_stage(f"{inner.name.value}_{i}", inner)

    if too_many:
        draft.report(
            "E0302",
            f"the schedule has more than {MAX_STAGES:,} stages (with `repeat` written out)",
            too_many[0].name.span,
            "one stage too many",
            f"a schedule has at most {MAX_STAGES:,} stages: repeat fewer times, or train longer stages",
        )
    for key in REQUIRED_SETTINGS:
        if key not in draft.setting_nodes:
            draft.report(
                "E0103",
                f"missing required setting `{key}`",
                draft.start_span(),
                "in this schedule",
                f"add a line such as `{SETTING_EXAMPLES[key]}`",
            )
    repeated = any(  # a repeat with a stage in it whose count was wrong: that error says enough
        isinstance(s, ast.Repeat) and any(not isinstance(inner, ast.Repeat) for inner in s.body)
        for s in draft.module.statements
    )
    if not draft.stages and not repeated:
        draft.report(
            "E0105",
            "the schedule has no stages",
            draft.start_span(),
            "in this schedule",
            "add a stage such as `stage base { train 1000 steps }`",
        )
    return draft


def _repeat_count(draft: Draft, node: ast.Repeat) -> int | None:
    value, problem = coerce(REPEAT, node.count, None)
    if problem:
        draft.diagnostics.append(problem)
        return None
    assert isinstance(value, int)
    return value


def _stage_structure(draft: Draft, name: str, node: ast.Stage) -> StageDraft:
    stage = StageDraft(name, node)
    seen_train = False
    for item in node.items:
        if isinstance(item, ast.Grow):
            if seen_train:
                draft.report(
                    "E0108",
                    f"`grow` after `train` in stage `{name}`",
                    item.span,
                    "after the stage's `train`",
                    "a stage grows first, then trains: move this `grow` above the `train`",
                )
            stage.grows.append(_grow_structure(draft, name, item))
        elif isinstance(item, ast.Train):
            if stage.train is not None:
                _duplicate_statement(draft, "train", name, item)
                continue
            stage.train, seen_train = item, True
        elif isinstance(item, ast.LrScale):
            if stage.lr_scale is not None:
                _duplicate_statement(draft, "lr_scale", name, item)
                continue
            stage.lr_scale = item
        elif isinstance(item, ast.Rewarm):
            if stage.rewarm is not None:
                _duplicate_statement(draft, "rewarm", name, item)
                continue
            stage.rewarm = item
        else:
            if stage.reset is not None:
                _duplicate_statement(draft, "reset optimizer", name, item)
                continue
            stage.reset = item
    if stage.train is None:
        draft.report(
            "E0107",
            f"stage `{name}` has no `train`",
            node.name.span,
            "no `train` in this stage",
            "every stage ends with one `train`, such as `train 500 steps`",
        )
    return stage


def _duplicate_statement(draft: Draft, word: str, stage: str, item: ast.StageItem) -> None:
    draft.report("E0106", f"duplicate `{word}` in stage `{stage}`", item.span, "given again", None)


def _grow_structure(draft: Draft, stage: str, node: ast.Grow) -> GrowDraft:
    grow = GrowDraft(node)
    if node.block is None:
        return grow
    keep: ast.Keep | None = None
    seen: set[type] = set()
    for item in node.block.items:
        if type(item) in seen:
            word = type(item).__name__.lower()
            draft.report("E0106", f"duplicate `{word}` in a probe block", item.span, "given again")
            continue
        seen.add(type(item))
        match item:
            case ast.Candidates():
                grow.candidates_node = item
            case ast.Probe():
                grow.probe = item
            case ast.Select():
                grow.select = item
            case ast.Keep():
                keep = item
    head = Span(node.span.line, node.span.column, node.span.line, node.span.column + 4)
    for needed, example in ((ast.Candidates, "candidates [copy_top, midas]"), (ast.Probe, "probe 25 steps")):
        if needed not in seen:
            word = needed.__name__.lower()
            draft.report(
                "E0107",
                f"the probe block in stage `{stage}` has no `{word}`",
                head,
                f"no `{word}` in this block",
                f"add `{example}` inside the braces",
            )
            grow.ok = False
    if keep is not None:
        mode = keep.mode.value
        if mode in KEEP_MODES:
            grow.keep = mode
        else:
            draft.report(
                "E0104",
                f"unknown keep mode `{mode}`",
                keep.mode.span,
                f"expected {one_of(KEEP_MODES)}",
                did_you_mean(mode, KEEP_MODES),
            )
    return grow
