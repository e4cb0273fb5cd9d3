"""The syntax tree, built by the LALR parser as it reduces: one handler per grammar rule
(`Builder`), each given the rule's span and the children that carry meaning. Lexical trouble found
here (a malformed number, an unknown escape, values nested too deeply) goes into the diagnostics of
the parse in progress (`LEXICAL`), which `lagdsl.lang.parser.parse` sets."""

from __future__ import annotations

import contextvars
import functools
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from lark import Token, Transformer

from lagdsl.lang import syntax as ast
from lagdsl.lang.diagnostics import Diagnostic
from lagdsl.lang.source import Span
from lagdsl.lang.syntax_errors import token_span

#: The deepest that calls, tuples and lists may nest (real schedules nest two or three deep).
MAX_NESTING = 16
#: A number with more digits than this is beyond every limit of the language: it is read as
#: infinite (and the checker reports it out of range) instead of being converted digit by digit.
_MAX_DIGITS = 400
#: The lexical diagnostics of the parse in progress (a malformed number, an unknown escape): the
#: tree builder reports into the list of the parse that called it, so parses share no state.
LEXICAL: contextvars.ContextVar[list[Diagnostic]] = contextvars.ContextVar("lagdsl_lexical_diagnostics")

_MAGNITUDES = {"k": 1_000, "M": 1_000_000, "B": 1_000_000_000}
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n"}
#: Tokens that only shape the syntax: dropped before a handler sees its children.
_SYNTAX_ONLY = frozenset({"LPAR", "RPAR", "LBRACE", "RBRACE", "LSQB", "RSQB", "COMMA", "EQUAL"} | {
    "_EVERY", "_WITH", "_OVER", "_LAST", "_AT", "_POSITIONS", "_DOTS"
})  # fmt: skip


#: The syntax nodes that are values (what `_value` may be handed besides tokens).
_VALUE_NODES = (ast.Number, ast.String, ast.Name, ast.Duration, ast.Call, ast.Tuple, ast.List)


def _edge(item: object) -> Span | None:
    if isinstance(item, Token):
        return token_span(item)
    return getattr(item, "span", None)


@dataclass(frozen=True)
class _Options:
    """The `(key=value, ...)` after `eval every` and `checkpoint every`: only the setting keeps it."""

    args: tuple[ast.Arg, ...]
    span: Span


@dataclass(frozen=True)
class _TrainBlock:
    """The `{ freeze ... }` after `train D`: only the `train` keeps it."""

    freezes: tuple[ast.Freeze, ...]
    span: Span


#: A rule's children as lark hands them over: tokens, syntax nodes built below, or None for an
#: optional part left out.
Children = list[Any]


def _rule(handler: Callable[..., object]) -> Callable[..., object]:
    """A grammar rule's handler: called during the parse with every child, it gets the rule's span
    (first child to last, punctuation included) and the children that carry meaning."""

    @functools.wraps(handler)
    def callback(self: Builder, children: Children) -> object:
        spans = [span for span in map(_edge, children) if span is not None]
        span = Span.cover(spans[0], spans[-1]) if spans else Span(1, 1, 1, 1)
        kept = [c for c in children if not (isinstance(c, Token) and c.type in _SYNTAX_ONLY)]
        return handler(self, span, kept)

    return callback


class Builder(Transformer[Token, object]):
    """Syntax nodes straight from the LALR parser's reductions (no intermediate lark tree).

    Lark hands a transformer given at construction no positions, so the parser keeps every token
    and each handler takes its span from its first and last child. Lexical diagnostics go to the
    calling parse's own list (`LEXICAL`) instead of raising; the builder itself holds no state.
    """

    def __init__(self) -> None:
        super().__init__(visit_tokens=False)
        #: how deep each `repeat` built so far nests repeats (itself included), by identity
        self._repeat_depth: dict[int, int] = {}

    @staticmethod
    def _report(diagnostic: Diagnostic) -> None:
        LEXICAL.get().append(diagnostic)

    # -- tokens

    def _name(self, token: Token) -> ast.Name:
        return ast.Name(str(token), token_span(token))

    def _number(self, token: Token) -> ast.Number:
        text = str(token)
        body, scale = (text[:-1], _MAGNITUDES[text[-1]]) if text[-1] in _MAGNITUDES else (text, 1)
        if sum(c.isdigit() for c in body.partition("e")[0].partition("E")[0]) > _MAX_DIGITS:
            return ast.Number(math.inf, text, token_span(token))  # beyond every limit: the checker says so
        try:
            value: int | float
            if re.fullmatch(r"[+-]?[0-9_]+", body):
                value = int(body) * scale
            else:
                value = float(body) * scale
                if scale != 1 and value.is_integer():
                    value = int(value)
        except ValueError:
            self._report(
                Diagnostic(
                    "E0004",
                    f"malformed number `{text}`",
                    token_span(token),
                    "not a number",
                    "underscores go between digits, as in `1_000`",
                )
            )
            value = 0
        return ast.Number(value, text, token_span(token))

    def _string(self, token: Token) -> ast.String:
        raw = str(token)[1:-1]
        out: list[str] = []
        i = 0
        while i < len(raw):
            char = raw[i]
            if char == "\\":
                escape = raw[i + 1]
                if escape in _ESCAPES:
                    out.append(_ESCAPES[escape])
                else:
                    where = token_span(token)
                    column = where.column + 1 + i
                    span = Span(where.line, column, where.line, column + 2)
                    self._report(
                        Diagnostic(
                            "E0003",
                            f"unknown escape `\\{escape}` in a string",
                            span,
                            "not an escape",
                            'the escapes are `\\"`, `\\\\` and `\\n`',
                        )
                    )
                i += 2
                continue
            out.append(char)
            i += 1
        return ast.String("".join(out), token_span(token))

    def _value(self, item: object) -> ast.Value:
        if isinstance(item, Token):
            if item.type == "NUMBER":
                return self._number(item)
            if item.type == "STRING":
                return self._string(item)
            return self._name(item)
        assert isinstance(item, _VALUE_NODES)
        return item

    def _op(self, item: object) -> ast.Name | ast.Call:
        value = self._value(item)
        assert isinstance(value, (ast.Name, ast.Call))  # the grammar allows only these here
        return value

    # -- values

    @_rule
    def duration(self, span: Span, children: Children) -> ast.Duration:
        number, unit = children
        kind: dict[str, Literal["steps", "tokens"]] = {"STEPS": "steps", "STEP": "steps", "TOKENS": "tokens",
                                                      "TOKEN": "tokens"}  # fmt: skip
        return ast.Duration(self._number(number), kind.get(unit.type, "%"), span)

    @_rule
    def arg(self, span: Span, children: Children) -> ast.Arg:
        name, value = children[0], children[-1]  # `[NAME "="]` leaves placeholders when absent
        return ast.Arg(self._name(name) if name is not None else None, self._value(value), span)

    @_rule
    def call(self, span: Span, children: Children) -> ast.Call:
        func, *args = children
        kept = tuple(a for a in args if a is not None)
        return ast.Call(self._name(func), kept, span, self._depth([a.value for a in kept], span))

    @_rule
    def options(self, span: Span, children: Children) -> _Options:
        return _Options(tuple(a for a in children if a is not None), span)

    @_rule
    def tuple_value(self, span: Span, children: Children) -> ast.Tuple:
        items = tuple(self._value(c) for c in children if c is not None)
        return ast.Tuple(items, span, self._depth(items, span))

    @_rule
    def list_value(self, span: Span, children: Children) -> ast.List:
        items = tuple(self._value(c) for c in children if c is not None)
        return ast.List(items, span, self._depth(items, span))

    def _depth(self, items: Iterable[ast.Value], span: Span) -> int:
        """The nesting depth of a call, tuple or list of `items`; past `MAX_NESTING`, one E0005."""
        depth = 1 + max((getattr(item, "depth", 0) for item in items), default=0)
        if depth == MAX_NESTING + 1:
            self._report(
                Diagnostic(
                    "E0005",
                    f"values nested more than {MAX_NESTING} deep",
                    Span(span.line, span.column, span.line, span.column + 1),
                    "too deep from here",
                    "a schedule's values are numbers, names, strings, short lists and calls: write this flat",
                )
            )
        return depth

    # -- statements

    @_rule
    def setting(self, span: Span, children: Children) -> ast.Setting:
        key, value, *rest = children
        extra: tuple[ast.Arg, ...] = ()
        if rest and isinstance(rest[0], Token):  # batch N accumulate M
            word, count = rest
            extra = (ast.Arg(self._name(word), self._number(count), Span.cover(token_span(word), token_span(count))),)
        elif rest and rest[0] is not None:
            extra = rest[0].args
        options = bool(rest) and not isinstance(rest[0], Token) and rest[0] is not None
        return ast.Setting(self._name(key), self._value(value), extra, span, options)

    @_rule
    def operator_def(self, span: Span, children: Children) -> ast.OperatorDef:
        _, name, op = children
        return ast.OperatorDef(self._name(name), self._op(op), span)

    @_rule
    def pool_def(self, span: Span, children: Children) -> ast.PoolDef:
        _, name, items = children
        return ast.PoolDef(self._name(name), items, span)

    @_rule
    def stage(self, span: Span, children: Children) -> ast.Stage:
        _, name, *items = children
        return ast.Stage(self._name(name), tuple(items), span)

    @_rule
    def repeat(self, span: Span, children: Children) -> ast.Repeat:
        _, count, *body = children
        node = ast.Repeat(self._number(count), tuple(body), span)
        depth = 1 + max((self._repeat_depth.get(id(b), 0) for b in body if isinstance(b, ast.Repeat)), default=0)
        self._repeat_depth[id(node)] = depth
        if depth == MAX_NESTING + 1:  # repeats may not nest at all (E0208); this deep, not even be laid out
            self._report(
                Diagnostic(
                    "E0005",
                    f"`repeat` blocks nested more than {MAX_NESTING} deep",
                    Span(span.line, span.column, span.line, span.column + 6),
                    "too deep from here",
                    "repeats may not nest: write the inner stages out, or multiply the counts",
                )
            )
        return node

    @_rule
    def grow(self, span: Span, children: Children) -> ast.Grow:
        _, dim, mode, amount, how = children
        block = how if isinstance(how, ast.ProbeBlock) else None
        op = None if block is not None else self._op(how)
        direction: Literal["to", "by"] = "to" if str(mode) == "to" else "by"
        return ast.Grow(self._name(dim), direction, self._number(amount), op, block, span)

    @_rule
    def train(self, span: Span, children: Children) -> ast.Train:
        block = children[2] if len(children) > 2 else None
        if isinstance(block, _TrainBlock):
            return ast.Train(children[1], span, block.freezes, block.span)
        return ast.Train(children[1], span)

    @_rule
    def train_block(self, span: Span, children: Children) -> _TrainBlock:
        return _TrainBlock(tuple(c for c in children if isinstance(c, ast.Freeze)), span)

    @_rule
    def freeze(self, span: Span, children: Children) -> ast.Freeze:
        return ast.Freeze(self._value(children[1]), span)

    @_rule
    def lr_scale(self, span: Span, children: Children) -> ast.LrScale:
        return ast.LrScale(tuple(c for c in children[1:] if isinstance(c, ast.Arg)), span)

    @_rule
    def scale(self, span: Span, children: Children) -> ast.Arg:
        name, number = children
        return ast.Arg(self._name(name), self._value(number), span)

    @_rule
    def rewarm(self, span: Span, children: Children) -> ast.Rewarm:
        return ast.Rewarm(children[1], span)

    @_rule
    def reset(self, span: Span, children: Children) -> ast.Reset:
        return ast.Reset(self._name(children[1]), span)

    @_rule
    def probe_block(self, span: Span, children: Children) -> ast.ProbeBlock:
        return ast.ProbeBlock(tuple(children), span)

    @_rule
    def candidates(self, span: Span, children: Children) -> ast.Candidates:
        value = self._value(children[1])
        assert isinstance(value, (ast.Name, ast.List))
        return ast.Candidates(value, span)

    @_rule
    def probe(self, span: Span, children: Children) -> ast.Probe:
        return ast.Probe(children[1], span)

    @_rule
    def select(self, span: Span, children: Children) -> ast.Select:
        _, direction, metric, *rest = children  # each optional part, or its placeholders
        window = next((c for c in rest if isinstance(c, ast.Duration)), None)
        positions = next((c for c in rest if isinstance(c, tuple)), None)
        return ast.Select(self._name(direction), self._name(metric), window, span, positions)

    @_rule
    def positions(self, span: Span, children: Children) -> tuple[ast.Number, ast.Number | None]:
        start, end = children
        return self._number(start), self._number(end) if end is not None else None

    @_rule
    def keep(self, span: Span, children: Children) -> ast.Keep:
        return ast.Keep(self._name(children[1]), span)

    @_rule
    def start(self, span: Span, children: Children) -> ast.Module:
        return ast.Module(tuple(children), span)


BUILDER = Builder()

#: Grammar rules that need no handler of their own (lark inlines them or they are pass-through).
INLINED_RULES = frozenset({"value"})
