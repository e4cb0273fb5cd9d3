"""Typed parameters of the language's calls (`gpt(...)`, `adamw(...)`, `copy_top(...)`, ...).

The pydantic models of the schedule (`lagdsl.lang.schedule`) are the one source of every
parameter's type, default, range, choices and help text: `Param.of(Model, "field")` reads them off
a field. A `Signature` lists a call's parameters; `bind` checks a call's arguments against it and
returns plain Python values, reporting every unknown, missing, mistyped or out-of-range argument.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from lagdsl.lang import syntax as ast
from lagdsl.lang.diagnostics import Diagnostic, did_you_mean, one_of
from lagdsl.lang.schedule import Written

Kind = Literal["int", "float", "bool", "str", "files", "choice", "duration", "pair", "ranges"]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()


@dataclass(frozen=True)
class Param:
    """One parameter: its type, default (or REQUIRED), and the values it accepts."""

    name: str
    kind: Kind
    default: object = REQUIRED
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] = ()
    auto: bool = False  # also accepts the name `auto`
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def describe_type(self) -> str:
        if self.kind == "choice":
            return one_of(self.choices)
        words = {
            "int": "an integer",
            "float": "a number",
            "bool": "`true` or `false`",
            "str": "a string",
            "files": 'a file name or glob, or a list of them, such as `"train.bin"` or `["a.bin", "b.bin"]`',
            "duration": "a duration such as `100 steps`",
            "pair": "a pair of numbers such as `(0.9, 0.95)`",
            "ranges": "a list of layer ranges such as `[[0, 24], [8, 32]]`",
        }
        return words[self.kind] + (" or `auto`" if self.auto else "")

    def describe_range(self) -> str:
        parts = []
        if self.gt is not None:
            parts.append(f"greater than {_fmt(self.gt)}")
        if self.ge is not None:
            parts.append(f"at least {_fmt(self.ge)}")
        if self.lt is not None:
            parts.append(f"less than {_fmt(self.lt)}")
        if self.le is not None:
            parts.append(f"at most {_fmt(self.le)}")
        return " and ".join(parts)

    def in_range(self, value: float) -> bool:
        return not (
            (self.gt is not None and value <= self.gt)
            or (self.ge is not None and value < self.ge)
            or (self.lt is not None and value >= self.lt)
            or (self.le is not None and value > self.le)
        )

    def signature_text(self) -> str:
        if self.required:
            return self.name
        return f"{self.name}={_fmt_default(self.default)}"

    @classmethod
    def of(cls, model: type[BaseModel], name: str, *, required: bool = False) -> Param:
        """The parameter that field `name` of `model` declares: its type, default, range, choices
        and help. `required` drops the default (a field that one call of several must be given)."""
        info = model.model_fields[name]
        written = next((m for m in info.metadata if isinstance(m, Written)), Written())
        kind, choices, bounds = _kind(info.annotation, written)
        bounds = {**bounds, **_bounds(info.metadata)}
        if written.auto:
            default: object = "auto"
        elif required or info.is_required():
            default = REQUIRED
        else:
            default = info.get_default(call_default_factory=True)
        return cls(name, kind, default, choices=choices, auto=written.auto, help=info.description or "", **bounds)


def params_of(model: type[BaseModel], *names: str) -> tuple[Param, ...]:
    """`Param.of` for each of `names` (default: every field but the discriminator)."""
    fields = names or tuple(n for n in model.model_fields if n not in _DISCRIMINATORS)
    return tuple(Param.of(model, n) for n in fields)


_DISCRIMINATORS = ("kind", "name", "family")


def _kind(annotation: Any, written: Written) -> tuple[Kind, tuple[str, ...], dict[str, float]]:
    """A field's language type, its choices, and bounds that come from the type (a pair's items)."""
    if written.duration:
        return "duration", (), {}
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if set(rest) == {str, tuple[str, ...]}:
            return "files", (), {}
        if len(rest) == 1:
            return _kind(rest[0], written)
    if origin is Literal:
        return "choice", tuple(str(a) for a in args), {}
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return "ranges", (), {}
    if origin is tuple and len(args) == 2:
        item = args[0]
        metadata = [m for m in getattr(item, "__metadata__", ()) if isinstance(m, FieldInfo)]
        return "pair", (), _bounds(metadata[0].metadata) if metadata else {}
    simple: dict[object, Kind] = {int: "int", float: "float", bool: "bool", str: "str"}
    if annotation in simple:
        return simple[annotation], (), {}
    raise TypeError(f"the language has no type for {annotation!r}")


def _bounds(metadata: list[Any]) -> dict[str, float]:
    bounds: dict[str, float] = {}
    for item in metadata:
        for name in ("gt", "ge", "lt", "le"):
            kind = getattr(annotated_types, name.capitalize())
            if isinstance(item, kind):
                bound = getattr(item, name)  # an int stays one: 2**63 - 1 is no float
                bounds[name] = bound if isinstance(bound, int) else float(bound)
    return bounds


@dataclass(frozen=True)
class Signature:
    """A callable's name and parameters; `positional` are the ones that may be given by position."""

    name: str
    params: tuple[Param, ...]
    positional: tuple[str, ...] = ()
    description: str = ""

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def text(self) -> str:
        return f"{self.name}(" + ", ".join(p.signature_text() for p in self.params) + ")"

    @classmethod
    def of(
        cls,
        name: str,
        model: type[BaseModel],
        *fields: str,
        required: tuple[str, ...] = (),
        positional: tuple[str, ...] = (),
        description: str | None = None,
    ) -> Signature:
        """The call `name(...)` whose parameters are `model`'s `fields` (default: all but the
        discriminator); its description defaults to the model's docstring."""
        names = fields or tuple(n for n in model.model_fields if n not in _DISCRIMINATORS)
        params = tuple(Param.of(model, n, required=n in required) for n in names)
        text = description if description is not None else (model.__doc__ or "").strip().split("\n")[0]
        return cls(name, params, positional, text.rstrip("."))


def _fmt(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}" if abs(value) >= 10_000 else str(int(value))
    return str(value)


def _fmt_default(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "(" + ", ".join(_fmt_default(v) for v in value) + ")"
    if isinstance(value, str):
        return value
    if value is None:
        return "none"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def clip(text: str, width: int = 40) -> str:
    """`text` shortened in the middle to about `width` characters: a 16,000-digit number in a
    message shows its ends."""
    if len(text) <= width:
        return text
    return f"{text[: width // 2]}...{text[-(width // 4) :]} ({len(text):,} characters)"


def show(value: ast.Value) -> str:
    """A value as the user wrote it, for messages."""
    if isinstance(value, ast.Number):
        return clip(value.text)
    if isinstance(value, ast.String):
        return '"' + value.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, ast.Name):
        return value.value
    if isinstance(value, ast.Duration):
        return value.amount.text + ("%" if value.unit == "%" else f" {value.unit}")
    if isinstance(value, ast.Call):
        args = ", ".join((f"{a.name.value}=" if a.name else "") + show(a.value) for a in value.args)
        return f"{value.func.value}({args})"
    if isinstance(value, ast.Tuple):
        return "(" + ", ".join(show(v) for v in value.items) + ")"
    return "[" + ", ".join(show(v) for v in value.items) + "]"


def coerce(param: Param, value: ast.Value, owner: str | None) -> tuple[object | None, Diagnostic | None]:
    """The Python value of `value` for `param`, or a diagnostic. Durations stay syntax nodes.

    `owner` names the call the parameter belongs to; None for a setting of its own (`seed`).
    """
    where = f"`{param.name}` of `{owner}`" if owner else f"`{param.name}`"

    def wrong_type() -> Diagnostic:
        return Diagnostic(
            "E0301",
            f"{where} takes {param.describe_type()}, found `{show(value)}`",
            value.span,
            "wrong type",
            param.help or None,
        )

    def out_of_range(*, finite: bool = True) -> Diagnostic:
        wanted = param.describe_range()
        if not finite:  # infinity, or more digits than any number holds
            wanted = "a finite number" + (f" {wanted}" if wanted else "")
        return Diagnostic(
            "E0302",
            f"{where} must be {wanted}, found `{show(value)}`",
            value.span,
            "out of range",
            param.help
            or (f"`{param.name}` must be {param.describe_range()}" if not finite and param.describe_range() else None),
        )

    if param.auto and isinstance(value, ast.Name) and value.value == "auto":
        return "auto", None
    kind = param.kind
    if kind in ("int", "float"):
        if not isinstance(value, ast.Number):
            return None, wrong_type()
        number = value.value
        if isinstance(number, float) and not math.isfinite(number):
            return None, out_of_range(finite=False)  # `1e400`, or more digits than a number can hold
        if kind == "int":
            if isinstance(number, float):
                if not number.is_integer():
                    return None, wrong_type()
                number = int(number)
        else:
            try:
                number = float(number)
            except OverflowError:  # an integer beyond any float
                return None, out_of_range(finite=False)
        if not param.in_range(number):
            return None, out_of_range()
        return number, None
    if kind == "bool":
        if isinstance(value, ast.Name) and value.value in ("true", "false", "on", "off"):
            return value.value in ("true", "on"), None
        return None, wrong_type()
    if kind == "str":
        return (value.value, None) if isinstance(value, ast.String) else (None, wrong_type())
    if kind == "files":
        if isinstance(value, ast.String):
            return value.value, None
        if isinstance(value, ast.List) and value.items and all(isinstance(v, ast.String) for v in value.items):
            return tuple(v.value for v in value.items if isinstance(v, ast.String)), None
        return None, wrong_type()
    if kind == "choice":
        word = value.value if isinstance(value, (ast.Name, ast.String)) else None
        if word in param.choices:
            return word, None
        if isinstance(word, str):
            return None, Diagnostic(
                "E0104",
                f"unknown {param.name} `{word}`" + (f" for `{owner}`" if owner else ""),
                value.span,
                f"expected {one_of(param.choices)}",
                did_you_mean(word, param.choices),
            )
        return None, wrong_type()
    if kind == "duration":
        if isinstance(value, ast.Duration):
            return value, None
        if isinstance(value, ast.Number) and value.value == 0:
            return ast.Duration(value, "steps", value.span), None
        return None, wrong_type()
    if kind == "ranges":
        return _ranges(value, where, wrong_type)
    # pair
    if not (isinstance(value, ast.Tuple) and len(value.items) == 2):
        return None, wrong_type()
    numbers = []
    for item in value.items:
        if not isinstance(item, ast.Number):
            return None, wrong_type()
        if not param.in_range(float(item.value)):
            return None, Diagnostic(
                "E0302",
                f"each of {where} must be {param.describe_range()}, found `{item.text}`",
                item.span,
                "out of range",
            )
        numbers.append(float(item.value))
    return tuple(numbers), None


def _ranges(
    value: ast.Value, where: str, wrong_type: Callable[[], Diagnostic]
) -> tuple[object | None, Diagnostic | None]:
    """A list of half-open layer ranges `[[a, b], ...]` (mergekit's `layer_range`), each 0 <= a < b."""
    if not isinstance(value, ast.List) or not value.items:
        return None, wrong_type()
    ranges = []
    for item in value.items:
        pair = item.items if isinstance(item, (ast.List, ast.Tuple)) else ()
        numbers = [v.value for v in pair if isinstance(v, ast.Number)]
        if len(pair) != 2 or len(numbers) != 2 or not all(isinstance(n, int) for n in numbers):
            return None, Diagnostic(
                "E0301",
                f"each item of {where} is a range `[start, end]` of two layer numbers, found `{show(item)}`",
                item.span,
                "not a layer range",
                "ranges are half-open, as mergekit's `layer_range`: `[0, 24]` is layers 0 to 23",
            )
        start, end = numbers
        assert isinstance(start, int) and isinstance(end, int)
        if not 0 <= start < end:
            return None, Diagnostic(
                "E0302",
                f"the range `{show(item)}` of {where} is empty or negative",
                item.span,
                "out of range",
                "a range `[start, end]` needs 0 <= start < end (half-open: `end` is not included)",
            )
        ranges.append((start, end))
    return tuple(ranges), None


def bind(
    signature: Signature, call: ast.Call | ast.Name, diagnostics: list[Diagnostic], owner: str | None = None
) -> dict[str, object] | None:
    """The arguments of `call` as a complete dict (defaults filled), or None after an error.

    A bare name (`midas`) is a call with no arguments.
    """
    owner = owner or signature.name
    args = call.args if isinstance(call, ast.Call) else ()
    values: dict[str, object] = {}
    seen: dict[str, ast.Arg] = {}
    ok = True
    misplaced = False  # an argument that went to no parameter: "missing" errors would repeat it
    names = [p.name for p in signature.params]
    positional = list(signature.positional)
    keyword_seen = False
    for arg in args:
        if arg.name is None:
            if keyword_seen or not positional:
                why = "after a keyword argument" if keyword_seen else "by position"
                diagnostics.append(
                    Diagnostic(
                        "E0211",
                        f"`{owner}` takes no argument {why} here",
                        arg.span,
                        "unexpected argument",
                        f"name it: {signature.text()}",
                    )
                )
                ok, misplaced = False, True
                continue
            name = positional.pop(0)
        else:
            keyword_seen = True
            name = arg.name.value
            if name in positional:
                positional.remove(name)
        param = signature.param(name)
        if param is None:
            span = arg.name.span if arg.name else arg.span
            diagnostics.append(
                Diagnostic(
                    "E0205",
                    f"unknown parameter `{name}` of `{owner}`",
                    span,
                    "no such parameter",
                    did_you_mean(name, names) or f"`{owner}` takes {one_of(names) or 'no parameters'}",
                )
            )
            ok, misplaced = False, True
            continue
        if name in seen:
            diagnostics.append(Diagnostic("E0211", f"`{name}` is given twice to `{owner}`", arg.span, "given again"))
            ok = False
            continue
        seen[name] = arg
        value, problem = coerce(param, arg.value, owner)
        if problem is not None:
            diagnostics.append(problem)
            ok = False
            continue
        values[name] = value
    for param in signature.params:
        if param.name in seen:
            continue
        if param.required and not misplaced:
            diagnostics.append(
                Diagnostic(
                    "E0206",
                    f"`{owner}` needs `{param.name}`",
                    call.span,
                    f"`{param.name}` missing",
                    f"write it as {signature.text()}",
                )
            )
            ok = False
        else:
            values[param.name] = param.default
    return values if ok else None
