"""Pass: the parts of the model a stage freezes (`train D { freeze old }`) and scales the LR of
(`lr_scale old=0.1`), named and checked against the stage's shape and growth."""

from __future__ import annotations

from lagdsl.lang import syntax as ast
from lagdsl.lang.check.draft import Draft, StageDraft
from lagdsl.lang.diagnostics import did_you_mean, one_of
from lagdsl.lang.params import show
from lagdsl.lang.schedule import PARTS, Part
from lagdsl.lang.source import Span

_HELP = f"a part is {one_of(PARTS)} or `layers(a, b)` (the half-open range of the grown model's layers)"


def check_parts(draft: Draft) -> Draft:
    for stage in draft.stages:
        if stage.train is not None:
            for freeze in stage.train.freezes:
                items = freeze.target.items if isinstance(freeze.target, ast.List) else (freeze.target,)
                for item in items:
                    part = _part(draft, stage, item)
                    if part is not None:
                        stage.freeze.append((part, item.span))
        if stage.lr_scale is not None:
            _scales(draft, stage, stage.lr_scale)
        _names_something(draft, stage)
    return draft


def _part(draft: Draft, stage: StageDraft, node: ast.Value) -> Part | None:
    if isinstance(node, ast.Name):
        if node.value in PARTS:
            return Part.model_validate({"kind": node.value})
        help_text = did_you_mean(node.value, [*PARTS, "layers"]) or _HELP
        draft.report("E0104", f"unknown part of the model `{node.value}`", node.span, "not a part", help_text)
        return None
    if isinstance(node, ast.Call) and node.func.value == "layers":
        bounds = [a.value.value for a in node.args if a.name is None and isinstance(a.value, ast.Number)]
        if len(bounds) != 2 or len(node.args) != 2 or not all(isinstance(b, int) for b in bounds):
            draft.report(
                "E0301", f"expected `layers(a, b)` with two whole numbers, found `{show(node)}`", node.span,
                "not a range of layers", "`layers(0, 24)` names the layers 0 to 23",
            )  # fmt: skip
            return None
        start, end = int(bounds[0]), int(bounds[1])
        depth = stage.after.depth if stage.after is not None else None
        if not 0 <= start < end or (depth is not None and end > depth):
            where = f"the stage's model has {depth} layers" if depth is not None else "a range [a, b) with a < b"
            draft.report(
                "E0302", f"`{show(node)}` is not a range of the stage's layers", node.span, where,
                f"write `layers(a, b)` with 0 <= a < b <= {depth if depth is not None else 'the depth'}",
            )  # fmt: skip
            return None
        return Part(kind="layers", start=start, end=end)
    draft.report("E0301", f"expected a part of the model, found `{show(node)}`", node.span, "not a part", _HELP)
    return None


def _scales(draft: Draft, stage: StageDraft, node: ast.LrScale) -> None:
    seen: set[str] = set()
    for arg in node.args:
        assert arg.name is not None  # the grammar writes every scale as NAME=NUMBER
        name, value = arg.name.value, arg.value
        if name not in PARTS:
            help_text = did_you_mean(name, PARTS) or f"`lr_scale` takes {one_of(PARTS)}"
            draft.report("E0104", f"unknown part of the model `{name}`", arg.name.span, "not a part", help_text)
            continue
        if name in seen:
            draft.report("E0211", f"`{name}` is given twice in `lr_scale`", arg.span, "given again")
            continue
        seen.add(name)
        assert isinstance(value, ast.Number)
        if value.value < 0:
            draft.report(
                "E0302", f"`lr_scale {name}={value.text}` is negative", value.span, "below 0",
                "a scale multiplies the LR: 0 stops the part, 1 leaves it; use `freeze` to hold it exactly",
            )  # fmt: skip
            continue
        stage.scales.append((Part.model_validate({"kind": name}), float(value.value)))


def _names_something(draft: Draft, stage: StageDraft) -> None:
    """`old` and `new` need a growth; freezing `old` after width growth, or both, leaves nothing."""
    frozen: dict[str, Span] = {part.kind: span for part, span in stage.freeze}
    named = dict(frozen)
    if stage.lr_scale is not None:
        named.update({a.name.value: a.span for a in stage.lr_scale.args if a.name is not None})
    grows = [grow.dim for grow in stage.grows]
    if not grows:
        for kind, where in (("old", frozen), ("new", named)):  # `lr_scale old=` scales everything
            if kind in where:
                what = "every parameter" if kind == "old" else "no parameter"
                draft.report(
                    "E0405", f"stage `{stage.name}` grows nothing, so `{kind}` is {what}", where[kind],
                    f"`{kind}` is {what} here",
                    "`old` and `new` divide the model at the stage's growth; name `embed`, `head` or `layers(a, b)`",
                )  # fmt: skip
        return
    if "old" in frozen and "new" in frozen:
        draft.report(
            "E0405", f"stage `{stage.name}` freezes both `old` and `new`: nothing would train", frozen["new"],
            "the rest of the model", "freeze one of them",
        )  # fmt: skip
    if "new" in named and all(dim == "width" for dim in grows):
        draft.report(
            "E0405", f"stage `{stage.name}` only grows the width, so `new` is no parameter", named["new"],
            "no parameter is new", "width growth widens each old parameter: name `old`, `embed` or `head`",
        )  # fmt: skip
    if "old" in frozen and "new" not in frozen and "width" in grows:
        draft.report(
            "E0405", f"stage `{stage.name}` grows the width, so every parameter is `old` and freezing it leaves "
            "nothing to train", frozen["old"], "every parameter",
            "width growth widens each old parameter (none is new): freeze `embed`, `head` or `layers(a, b)`",
        )  # fmt: skip
