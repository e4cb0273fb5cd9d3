"""Diagnostics: codes, the record every check produces, and its text and JSON renderings.

Text looks like rustc and ruff::

    error[E0201]: unknown operator `copy_tpo`
      --> schedules/stack.grow:14:19
       |
    14 | pool depth_ops = [copy_tpo, midas]
       |                   ^^^^^^^^ not an operator
       |
       = help: did you mean `copy_top`?
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from lagdsl.lang.source import Source, Span

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Code:
    """A diagnostic code's entry: its severity and a one-line meaning."""

    severity: Severity
    meaning: str


def _error(meaning: str) -> Code:
    return Code("error", meaning)


def _warning(meaning: str) -> Code:
    return Code("warning", meaning)


#: Every diagnostic code. Codes are stable: never reuse or renumber one.
CODES: dict[str, Code] = {
    # syntax
    "E0001": _error("syntax error: the text does not follow the grammar"),
    "E0002": _error("a character that cannot start any token, or an unterminated string"),
    "E0003": _error("an unknown escape in a string"),
    "E0004": _error("a malformed number"),
    "E0005": _error("values nested too deeply"),
    # settings and statements
    "E0101": _error("unknown setting"),
    "E0102": _error("duplicate setting"),
    "E0103": _error("missing required setting"),
    "E0104": _error("unknown choice for a setting or statement (precision, device, optimizer, ...)"),
    "E0105": _error("the schedule has no stages"),
    "E0106": _error("duplicate statement in a stage or probe block"),
    "E0107": _error("missing statement in a stage or probe block"),
    "E0108": _error("`grow` after `train` in a stage"),
    "E0109": _error("settings that cannot be used together"),
    # names
    "E0201": _error("unknown operator"),
    "E0202": _error("unknown pool"),
    "E0203": _error("duplicate definition"),
    "E0204": _error("duplicate stage"),
    "E0205": _error("unknown parameter"),
    "E0206": _error("missing required parameter"),
    "E0207": _error("unknown selection metric"),
    "E0208": _error("nested `repeat`"),
    "E0209": _error("duplicate candidate"),
    "E0210": _error("a name of the wrong kind (a pool where an operator belongs, or the reverse)"),
    "E0211": _error("unexpected argument (too many positional, positional after keyword, or repeated)"),
    # types and ranges
    "E0301": _error("a value of the wrong type"),
    "E0302": _error("a value out of range"),
    "E0303": _error("`width` not divisible by `heads`"),
    "E0304": _error("probe longer than its stage's `train` under `keep winner`"),
    "E0305": _error("`over last` used with a metric other than `loss`, or with `probe 0 steps`"),
    "E0306": _error("`vocab=auto` with data that does not fix the vocabulary"),
    "E0307": _error("an odd head size (rotary positions need an even one)"),
    "E0308": _error("a tokenizer file that cannot be read"),
    "E0309": _error("a pretrained checkpoint that cannot be used"),
    # shapes
    "E0401": _error("a growth that does not grow"),
    "E0402": _error("an operator used on a dimension it does not grow"),
    "E0403": _error("an operator that cannot perform this growth"),
    "E0404": _error("a width that is not a multiple of the head size"),
    "E0405": _error("`freeze` or `lr_scale` naming no parameter, or freezing every one"),
    "E0406": _error("probe candidates building different mixtures of experts, or a mixture the model cannot take"),
    # budgets
    "E0501": _error("a duration in `%` without `total`"),
    "E0502": _error("stages that do not sum to `total`"),
    # warnings
    "W0201": _warning("a pool of one candidate"),
    "W0202": _warning("two probe candidates that build the same model"),
    "W0301": _warning("a probe shorter than 5 steps (other than 0)"),
    "W0401": _warning("a single growth step of more than 4x in depth or 2x in width"),
    "W0402": _warning("a width operator that keeps this model's function only approximately (its family's norms)"),
    "W0501": _warning("a `tokens` duration that is not a whole number of steps, rounded up"),
    "W0601": _warning("data that is not there: a glob that matches no file, a token file that does not exist"),
}


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in a source file."""

    code: str
    message: str
    span: Span
    label: str = ""
    help: str | None = None

    @property
    def severity(self) -> Severity:
        return CODES[self.code].severity

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """`did you mean `x`?` for the closest choice, or None when nothing is close."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


def one_of(choices: Iterable[str]) -> str:
    """`a`, `b` or `c`."""
    items = [f"`{c}`" for c in choices]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def sort_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """By position, then code; exact duplicates dropped."""
    unique = dict.fromkeys(diagnostics)
    return sorted(unique, key=lambda d: (d.span.line, d.span.column, d.code, d.message))


# ---------------------------------------------------------------------------------- rendering

_STYLE = {"error": "\x1b[1;31m", "warning": "\x1b[1;33m", "blue": "\x1b[1;34m", "bold": "\x1b[1m"}
_RESET = "\x1b[0m"


def render_text(diagnostic: Diagnostic, source: Source, *, color: bool = False) -> str:
    """One diagnostic in the rustc style, ending with a newline."""

    def paint(text: str, style: str) -> str:
        return f"{_STYLE[style]}{text}{_RESET}" if color else text

    span = source.clamp(diagnostic.span)
    line_text = source.line_text(span.line).replace("\t", " ")
    start = max(span.column, 1)
    end = span.end_column if span.end_line == span.line else len(line_text) + 1
    end = max(end, start + 1)
    width = len(str(span.line))
    gutter = " " * width
    bar = paint("|", "blue")

    severity = diagnostic.severity
    out = [
        paint(f"{severity}[{diagnostic.code}]", severity) + paint(f": {diagnostic.message}", "bold"),
        f"{gutter}{paint('-->', 'blue')} {source.name}:{span.line}:{span.column}",
        f"{gutter} {bar}",
        f"{paint(str(span.line), 'blue')} {bar} {line_text}".rstrip(),
    ]
    carets = " " * (start - 1) + "^" * (end - start)
    label = f" {diagnostic.label}" if diagnostic.label else ""
    out.append(f"{gutter} {bar} " + paint(carets + label, severity))
    out.append(f"{gutter} {bar}")
    out.append(f"{gutter} {paint('=', 'blue')} {paint('help', 'bold')}: {help_text(diagnostic)}")
    return "\n".join(out) + "\n"


def help_text(diagnostic: Diagnostic) -> str:
    """The help a person reads: the diagnostic's own, then where its code is explained."""
    explain = f"`lagdsl explain {diagnostic.code}`"
    return f"{diagnostic.help} (more: {explain})" if diagnostic.help else f"{explain} says more"


def to_json_object(diagnostic: Diagnostic, source: Source) -> dict[str, object]:
    """The JSON form: the fields ruff and editors read."""
    span = source.clamp(diagnostic.span)
    return {
        "code": diagnostic.code,
        "severity": diagnostic.severity,
        "message": diagnostic.message,
        "file": source.name,
        "line": span.line,
        "column": span.column,
        "end_line": span.end_line,
        "end_column": span.end_column,
        "help": diagnostic.help,
    }


def render_json(items: Sequence[tuple[Diagnostic, Source]]) -> str:
    """A JSON list of diagnostics, indented, ending with a newline."""
    return json.dumps([to_json_object(d, s) for d, s in items], indent=2) + "\n"
