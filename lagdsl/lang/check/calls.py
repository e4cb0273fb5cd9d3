"""A setting's value read as a parameter or as a call of a table's signatures (`adamw(lr=1e-3)`),
with the diagnostics of each; shared by the settings pass and its parts (`model`, `data`)."""

from __future__ import annotations

from lagdsl.lang import syntax as ast
from lagdsl.lang.check.draft import Args, Draft
from lagdsl.lang.diagnostics import did_you_mean, one_of
from lagdsl.lang.params import Param, Signature, bind, coerce, show


def value_of(draft: Draft, param: Param, setting: ast.Setting) -> object | None:
    value, problem = coerce(param, setting.value, None)
    if problem:
        draft.diagnostics.append(problem)
    return value


def _choice_of(draft: Draft, kind: str, table: dict[str, Signature], setting: ast.Setting) -> str | None:
    node = setting.value
    name_node = node.func if isinstance(node, ast.Call) else node
    name = name_node.value if isinstance(name_node, ast.Name) else show(name_node)
    if name not in table:
        draft.report(
            "E0104",
            f"unknown {kind} `{name}`",
            name_node.span,
            f"not a{'n' if kind[0] in 'aeiou' else ''} {kind}",
            did_you_mean(name, table) or f"the {kind}s are {one_of(table)}",
        )
        return None
    return name


def call_of(draft: Draft, kind: str, table: dict[str, Signature], setting: ast.Setting) -> tuple[str, Args] | None:
    """A setting whose value calls one of `table` (`adamw(lr=1e-3)`, or a bare `stdlib`)."""
    name = _choice_of(draft, kind, table, setting)
    if name is None:
        return None
    node = setting.value
    if not isinstance(node, (ast.Call, ast.Name)):
        return None  # a string or number: _choice_of reported it
    args = bind(table[name], node, draft.diagnostics)
    return None if args is None else (name, args)


def argument(node: ast.Value, name: str, positional: bool) -> ast.Value | None:
    """The value of the call's argument `name` (or its first positional one, where it may be given so)."""
    if not isinstance(node, ast.Call):
        return None
    for arg in node.args:
        if (arg.name is not None and arg.name.value == name) or (positional and arg.name is None):
            return arg.value
    return None
