"""Pass: names. Operators, pools and candidates resolved against the catalogue and the file's own
definitions; dimensions, reset targets and selection rules named."""

from __future__ import annotations

from lagdsl.lang import syntax as ast
from lagdsl.lang.catalogue import DIMS, SELECT_METRICS
from lagdsl.lang.check.draft import Draft, GrowDraft, OperatorRef
from lagdsl.lang.diagnostics import did_you_mean, one_of
from lagdsl.lang.params import bind, show


def resolve_names(draft: Draft) -> Draft:
    """Operators, pools and candidates resolved; dimensions, select rules and statements named."""
    for name, definition in draft.operator_defs.items():
        draft.operators[name] = _resolve_builtin(draft, definition.op, label=name)
    for name, pool in draft.pool_defs.items():
        draft.pools[name] = _resolve_list(draft, pool.items, f"pool `{name}`")
    for stage in draft.stages:
        if stage.reset is not None and stage.reset.target.value != "optimizer":
            word = stage.reset.target.value
            draft.report(
                "E0104",
                f"unknown reset target `{word}`",
                stage.reset.target.span,
                "expected `optimizer`",
                did_you_mean(word, ["optimizer"]) or "the statement is `reset optimizer`",
            )
        for grow in stage.grows:
            _resolve_grow(draft, grow)
    return draft


def _unknown_operator(draft: Draft, name: ast.Name) -> None:
    known = list(draft.catalogue.names()) + list(draft.operator_defs)
    help_text = did_you_mean(name.value, known) or "`lagdsl ops` lists the operators"
    if draft.catalogue.problems:
        help_text += "; " + "; ".join(draft.catalogue.problems)
    draft.report("E0201", f"unknown operator `{name.value}`", name.span, "not an operator", help_text)


def _resolve_builtin(draft: Draft, node: ast.Value, label: str) -> OperatorRef | None:
    """A built-in operator, bare (`midas`) or called (`copy_top(noise=0.1)`)."""
    func = node.func if isinstance(node, ast.Call) else node
    if not isinstance(func, ast.Name):
        draft.report("E0301", f"expected an operator, found `{show(node)}`", node.span, "not an operator")
        return None
    entries = draft.catalogue.lookup(func.value)
    if not entries:
        if func.value in draft.operator_defs and isinstance(node, ast.Call):
            draft.report(
                "E0210",
                f"`{func.value}` is an operator defined in this file, not a built-in one",
                func.span,
                "its arguments are fixed where it is defined",
                f"write `{func.value}` alone, or call a built-in operator",
            )
        elif func.value in draft.pool_defs:
            draft.report(
                "E0210",
                f"`{func.value}` is a pool, not an operator",
                func.span,
                "a pool",
                "pools are used with `candidates`",
            )
        else:
            _unknown_operator(draft, func)
        return None
    assert isinstance(node, (ast.Call, ast.Name))
    args = bind(entries[0].signature, node, draft.diagnostics)
    if args is None:
        return None
    return OperatorRef(label, func.value, args, {e.dim: e for e in entries}, node.span)


def _resolve_ref(draft: Draft, node: ast.Value) -> OperatorRef | None:
    """A user-defined operator name or a built-in operator."""
    if isinstance(node, ast.Name) and node.value in draft.operator_defs:
        ref = draft.operators.get(node.value)
        return None if ref is None else ref.at(node.span)
    return _resolve_builtin(draft, node, label=show(node))


def _resolve_list(draft: Draft, items: ast.List, where: str) -> list[OperatorRef] | None:
    refs: list[OperatorRef] = []
    labels: set[str] = set()  # (a set: a pool of thousands is checked in linear time)
    ok = True
    for item in items.items:
        ref = _resolve_ref(draft, item)
        if ref is None:
            ok = False
            continue
        if ref.label in labels:
            draft.report(
                "E0209",
                f"`{ref.label}` is listed twice in {where}",
                item.span,
                "listed again",
                "each candidate is tried once: remove the copy",
            )
            ok = False
            continue
        refs.append(ref)
        labels.add(ref.label)
    if not items.items:
        draft.report("E0302", f"{where} is empty", items.span, "no candidates", "list at least two operators")
        return None
    if len(items.items) == 1:
        draft.report(
            "W0201",
            f"{where} has only one candidate",
            items.span,
            "one candidate",
            "with one candidate there is nothing to choose: write `with OP`, or add candidates",
        )
    if not ok:
        draft.failed_lists.add(id(items))
    return refs  # the ones that resolved: later passes still check them


def _resolve_grow(draft: Draft, grow: GrowDraft) -> None:
    node = grow.node
    dim = node.dim.value
    if dim in DIMS:
        grow.dim = dim
    else:
        draft.report(
            "E0104",
            f"unknown dimension `{dim}`",
            node.dim.span,
            f"expected {one_of(DIMS)}",
            did_you_mean(dim, DIMS),
        )
        grow.ok = False
    if node.op is not None:
        grow.op = _resolve_ref(draft, node.op)
        grow.ok &= grow.op is not None
    if grow.candidates_node is not None:
        _resolve_candidates(draft, grow, grow.candidates_node.value)
    if grow.select is not None:
        direction, metric = grow.select.direction, grow.select.metric
        if direction.value != "lowest":
            draft.report(
                "E0104",
                f"unknown selection `{direction.value}`",
                direction.span,
                "expected `lowest`",
                did_you_mean(direction.value, ["lowest"]) or "the rule is `select lowest METRIC`",
            )
            grow.ok = False
        if metric.value not in SELECT_METRICS:
            draft.report(
                "E0207",
                f"unknown selection metric `{metric.value}`",
                metric.span,
                "not a metric",
                did_you_mean(metric.value, SELECT_METRICS) or f"the metrics are {one_of(SELECT_METRICS)}",
            )
            grow.ok = False


def _resolve_candidates(draft: Draft, grow: GrowDraft, value: ast.Name | ast.List) -> None:
    if isinstance(value, ast.List):
        grow.candidates = _resolve_list(draft, value, "the candidate list")
        grow.ok &= id(value) not in draft.failed_lists
    elif value.value in draft.pool_defs:
        pool = draft.pools.get(value.value)
        grow.ok &= id(draft.pool_defs[value.value].items) not in draft.failed_lists
        if pool is not None:
            grow.candidates = [ref.at(value.span) for ref in pool]
    elif value.value in draft.operator_defs or draft.catalogue.lookup(value.value):
        draft.report(
            "E0210",
            f"`{value.value}` is an operator, not a pool",
            value.span,
            "an operator",
            f"list the candidates, such as `candidates [{value.value}, ...]`",
        )
    else:
        draft.report(
            "E0202",
            f"unknown pool `{value.value}`",
            value.span,
            "not a pool",
            did_you_mean(value.value, draft.pool_defs) or "define it with `pool NAME = [op, op]`",
        )
    grow.ok &= grow.candidates is not None
