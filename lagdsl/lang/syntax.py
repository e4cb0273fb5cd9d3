"""The syntax tree of a `.grow` file: one frozen dataclass per construct, each with a span.

Spans take no part in equality, so two trees parsed from differently formatted text compare equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lagdsl.lang.source import Span


@dataclass(frozen=True)
class Name:
    value: str
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class Number:
    value: int | float
    text: str = field(compare=False)
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class String:
    value: str
    span: Span = field(compare=False, repr=False)


Unit = Literal["steps", "tokens", "%"]


@dataclass(frozen=True)
class Duration:
    amount: Number
    unit: Unit
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class Arg:
    """An argument of a call: positional when `name` is None."""

    name: Name | None
    value: Value
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class Call:
    func: Name
    args: tuple[Arg, ...]
    span: Span = field(compare=False, repr=False)
    depth: int = field(default=1, compare=False, repr=False)  # how deeply values nest in it, itself included


@dataclass(frozen=True)
class Tuple:
    items: tuple[Value, ...]
    span: Span = field(compare=False, repr=False)
    depth: int = field(default=1, compare=False, repr=False)


@dataclass(frozen=True)
class List:
    items: tuple[Value, ...]
    span: Span = field(compare=False, repr=False)
    depth: int = field(default=1, compare=False, repr=False)


Value = Number | String | Name | Duration | Call | Tuple | List


# ------------------------------------------------------------------------------ statements


@dataclass(frozen=True)
class Setting:
    """`KEY value [extra]`: `extra` holds `accumulate N` or the `(key=value)` options; `options`:
    the options' parentheses were written (`eval every 100 steps ()` has them, empty)."""

    key: Name
    value: Value
    extra: tuple[Arg, ...]
    span: Span = field(compare=False, repr=False)
    options: bool = field(default=False, compare=False, repr=False)


@dataclass(frozen=True)
class OperatorDef:
    name: Name
    op: Name | Call
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class PoolDef:
    name: Name
    items: List
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class Candidates:
    value: Name | List
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class Probe:
    duration: Duration
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class Select:
    direction: Name
    metric: Name
    window: Duration | None
    span: Span = field(compare=False, repr=False)
    #: `at positions A..B` (B None: to the end of the context)
    positions: tuple[Number, Number | None] | None = None


@dataclass(frozen=True)
class Keep:
    mode: Name
    span: Span = field(compare=False, repr=False)


ProbeItem = Candidates | Probe | Select | Keep


@dataclass(frozen=True)
class ProbeBlock:
    items: tuple[ProbeItem, ...]
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class Grow:
    """`grow DIM (to|by) N (with OP | { ... })`."""

    dim: Name
    mode: Literal["to", "by"]
    amount: Number
    op: Name | Call | None
    block: ProbeBlock | None
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class Freeze:
    """`freeze PART` or `freeze [PART, ...]` in a `train` block."""

    target: Value
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class Train:
    duration: Duration
    span: Span = field(compare=False, repr=False)
    freezes: tuple[Freeze, ...] = ()
    block: Span | None = field(default=None, compare=False, repr=False)  # the `{ ... }`, when written


@dataclass(frozen=True)
class LrScale:
    """`lr_scale old=0.1 new=1.0`: the stage's LR multiplied per part of the model."""

    args: tuple[Arg, ...]
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class Rewarm:
    duration: Duration
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class Reset:
    target: Name
    span: Span = field(compare=False, repr=False)


StageItem = Grow | Train | Rewarm | Reset | LrScale


@dataclass(frozen=True)
class Stage:
    name: Name
    items: tuple[StageItem, ...]
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class Repeat:
    count: Number
    body: tuple[Stage | Repeat, ...]
    span: Span = field(compare=False, repr=False)


Statement = Setting | OperatorDef | PoolDef | Stage | Repeat


@dataclass(frozen=True)
class Module:
    statements: tuple[Statement, ...]
    span: Span = field(compare=False, repr=False)
