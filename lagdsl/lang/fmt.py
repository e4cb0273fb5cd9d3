"""`lagdsl fmt`: the one canonical layout of a `.grow` file.

The layout is printed from the syntax tree, so it cannot depend on how the text was spaced:

- one statement a line; blocks indented by two spaces, `}` on a line of its own;
- one space between words, none inside brackets or before a comma, `key=value` in arguments,
  `name = value` in definitions, `25%` and `100 steps`;
- numbers, strings and names exactly as written (`20k` stays `20k`, `3e-3` stays `3e-3`);
- comments kept: a comment on a line of its own stays above what follows it (at that statement's
  indentation); a comment after code stays after it, and the trailing comments of consecutive lines
  are aligned one column apart from the longest of their code; a comment written inside a statement
  that spanned several lines goes above that statement, except one after an item of a list or call
  that stood on its line alone, which stays after it (the list then one item a line);
- at most one blank line in a row, none at the start or end of a block or of the file.

`format_source` refuses text with syntax errors (`FormatError`, with the parser's diagnostics), and
checks its own output: the output holds the input's lexemes in the same order (so it parses to the
same tree) and the same comments, or it raises instead of writing a schedule that means something
else. The suite checks the trees themselves.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from lagdsl.lang import syntax as ast
from lagdsl.lang.diagnostics import Diagnostic
from lagdsl.lang.parser import parse
from lagdsl.lang.source import Source, Span

INDENT = "  "
#: A statement longer than this, whose value is a list or a call, gets one item a line.
MAX_WIDTH = 100
#: The columns between the longest code of a group of lines and their aligned comments.
COMMENT_GAP = 2

#: Strings first, so that a `#` inside a string is not taken for a comment.
_LEXEME = re.compile(
    r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|[A-Za-z_][A-Za-z0-9_]*|[+-]?[0-9][0-9_.]*(?:[eE][+-]?[0-9]+)?[A-Za-z0-9_]*|\S'
)
COMMENT_OR_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*')


class FormatError(Exception):
    """The text cannot be formatted: its syntax diagnostics."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        super().__init__(f"{len(diagnostics)} syntax error(s)")
        self.diagnostics = diagnostics


@dataclass(frozen=True)
class _Comment:
    line: int
    text: str
    trailing: bool  # after code on its line


def format_source(source: Source) -> str:
    """The canonical text of `source` (ending with one newline; empty text stays empty)."""
    text = source.text.removeprefix("\ufeff")
    module, diagnostics = parse(Source(source.name, text))
    if module is None or diagnostics:
        raise FormatError(diagnostics)
    out = _Printer(Source(source.name, text)).module(module)
    if _lexemes(out) != _lexemes(text):  # a bug of ours: never write a schedule that means otherwise
        raise AssertionError(f"`lagdsl fmt` would change the meaning of {source.name}; please report this")
    return out


def as_read(raw: str) -> str:
    """A file's text with LF line ends (CRLF and lone CR alike): what fmt lays out and diffs;
    `as_written` puts the file's own line ends back."""
    return raw.replace("\r\n", "\n").replace("\r", "\n")


def as_written(formatted: str, original: str) -> str:
    """`formatted` (LF line ends, no byte-order mark) with the original file's line ends (CRLF
    when it has any) and its byte-order mark, if it had one: fmt changes the layout, not those."""
    if "\r\n" in original:
        formatted = formatted.replace("\n", "\r\n")
    return "\ufeff" + formatted if original.startswith("\ufeff") else formatted


def _lexemes(text: str) -> tuple[list[str], list[str]]:
    """The text's words, numbers, strings and punctuation in order (a comma before a closing
    bracket dropped), and its comments sorted. Layout changes only the spaces between lexemes, so
    equal lexemes parse to equal trees: the same check as parsing the output again, at a tenth of
    the cost (a parse is most of what `fmt` does)."""
    found = _LEXEME.findall(text)
    comments = sorted(x.rstrip() for x in found if x.startswith("#"))
    words = [x for x in found if not x.startswith("#")]
    kept = [x for i, x in enumerate(words) if not (x == "," and i + 1 < len(words) and words[i + 1] in ")]")]
    return kept, comments


def format_text(text: str, name: str = "<text>") -> str:
    return format_source(Source(name, text))


# ------------------------------------------------------------------------------ values


def value(node: ast.Value, source: Source) -> str:
    """A value as the canonical layout writes it."""
    if isinstance(node, ast.Number):
        return node.text
    if isinstance(node, ast.Name):
        return node.value
    if isinstance(node, ast.String):
        span = node.span
        return source.line_text(span.line)[span.column - 1 : span.end_column - 1]
    if isinstance(node, ast.Duration):
        unit = "%" if node.unit == "%" else f" {_unit_word(node, source)}"
        return f"{node.amount.text}{unit}"
    if isinstance(node, ast.Call):
        return f"{node.func.value}({args(node.args, source)})"
    if isinstance(node, ast.Tuple):
        return "(" + ", ".join(value(item, source) for item in node.items) + ")"
    return "[" + ", ".join(value(item, source) for item in node.items) + "]"


def _unit_word(node: ast.Duration, source: Source) -> str:
    """`steps`, `step`, `tokens` or `token`, as written (the tree keeps only the plural)."""
    span = node.span
    written = source.line_text(span.end_line)[: span.end_column - 1].rstrip()
    start = len(written)  # the letters at its end, found from the end: linear in the word, whatever precedes it
    while start > 0 and "a" <= written[start - 1] <= "z":
        start -= 1
    return written[start:] or node.unit


def args(items: tuple[ast.Arg, ...], source: Source) -> str:
    return ", ".join((f"{a.name.value}=" if a.name is not None else "") + value(a.value, source) for a in items)


# ------------------------------------------------------------------------------ statements


@dataclass
class _Line:
    """One line of output: its code (indented), the source lines it came from, its comment."""

    code: str
    first: int
    last: int
    comment: str = ""


class _Printer:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.comments = deque(_comments(source))  # in source order
        self.lines: list[_Line] = []
        self.last_line = 0  # the last source line that output has reached

    def module(self, module: ast.Module) -> str:
        for statement in module.statements:
            self.statement(statement, 0)
        self.comments_before(len(self.source.lines) + 1, 0)
        return _render(self.lines)

    # -- emitting

    def comments_before(self, line: int, depth: int) -> None:
        """The own-line comments above source `line`, at this depth."""
        while self.comments and self.comments[0].line < line:
            comment = self.comments.popleft()
            self.emit(comment.text, comment.line, comment.line, depth, is_comment=True)

    def emit(self, code: str, first: int, last: int, depth: int, *, is_comment: bool = False) -> None:
        self.emit_lines([(code, depth)], first, last, is_comment=is_comment)

    def emit_lines(self, codes: list[tuple[str, int]], first: int, last: int, *, is_comment: bool = False) -> None:
        """Output lines (code, depth) for the source lines `first`..`last`: the comments written
        among them go above, but one after the code of the last line, which stays after it."""
        trailing: list[_Comment] = []
        if not is_comment:
            inside = []
            while self.comments and self.comments[0].line <= last:
                inside.append(self.comments.popleft())
            trailing = [c for c in inside if c.trailing and c.line == last]
            for hoisted in (c for c in inside if c not in trailing):  # written inside a multi-line statement
                self.emit(hoisted.text, hoisted.line, hoisted.line, codes[0][1], is_comment=True)
        blank = bool(self.lines) and first > self.last_line + 1 and not self.lines[-1].code.endswith("{")
        if blank and not codes[0][0].startswith("}"):
            self.lines.append(_Line("", 0, 0))
        self.lines.extend(_Line(INDENT * depth + code, first, last) for code, depth in codes)
        if trailing:
            self.lines[-1].comment = trailing[0].text
        self.last_line = max(self.last_line, last)

    def simple(self, code: str, span: Span, depth: int, long: Long | None = None) -> None:
        """A statement on one line; one longer than `MAX_WIDTH` whose value is a list or call
        (`long`: the text up to its bracket, its items, the closing bracket) with one item a line,
        and so is one with a comment after one of its items, which stays after that item."""
        self.comments_before(span.line, depth)
        labelled = long is not None and self._labels_an_item(long, span)
        if long is None or len(long.items) < 2 or (len(INDENT * depth + code) <= MAX_WIDTH and not labelled):
            self.emit(code, span.line, span.end_line, depth)
            return
        if labelled:  # each item on its own line, with the comments around it
            self.emit(long.head, span.line, span.line, depth)
            for item, line in zip(long.items, long.lines, strict=True):
                self.emit(f"{item},", self.last_line + 1, max(line, self.last_line + 1), depth + 1)
            self.emit(long.close, span.end_line, span.end_line, depth)
            return
        lines = [(long.head, depth), *((f"{item},", depth + 1) for item in long.items), (long.close, depth)]
        self.emit_lines(lines, span.line, span.end_line)

    def _labels_an_item(self, long: Long, span: Span) -> bool:
        """Whether a comment follows the code of a line that holds one item of a list alone (not its
        first line or its last, whose comments stay with the statement), which a layout on one line
        would move away from its item."""
        alone = {line for line in long.lines if long.lines.count(line) == 1} - {span.line, span.end_line}
        return any(c.trailing and c.line in alone for c in self.comments if c.line <= span.end_line)

    def block(self, header: str, span: Span, header_end: int, items: Sequence[object], depth: int) -> None:
        """`header {`, the items one level in, `}` (on the block's last line)."""
        self.comments_before(span.line, depth)
        self.emit(header + " {", span.line, header_end, depth)
        for item in items:
            self._item(item, depth + 1)
        self.comments_before(span.end_line, depth + 1)
        self.emit("}", span.end_line, span.end_line, depth)

    # -- statements

    def statement(self, node: ast.Statement, depth: int) -> None:
        source = self.source
        if isinstance(node, ast.Setting):
            long = _long(node.key.value + " ", node.value, source) if not node.extra else None
            self.simple(_setting(node, source), node.span, depth, long)
        elif isinstance(node, ast.OperatorDef):
            head = f"operator {node.name.value} = "
            self.simple(head + value(node.op, source), node.span, depth, _long(head, node.op, source))
        elif isinstance(node, ast.PoolDef):
            head = f"pool {node.name.value} = "
            self.simple(head + value(node.items, source), node.span, depth, _long(head, node.items, source))
        elif isinstance(node, ast.Stage):
            self.block(f"stage {node.name.value}", node.span, _brace_line(node.name.span, source), node.items, depth)
        else:
            self.block(f"repeat {node.count.text}", node.span, _brace_line(node.count.span, source), node.body, depth)

    def _item(self, node: object, depth: int) -> None:
        source = self.source
        if isinstance(node, (ast.Stage, ast.Repeat)):
            self.statement(node, depth)
        elif isinstance(node, ast.Grow):
            head = f"grow {node.dim.value} {node.mode} {node.amount.text}"
            if node.block is None:
                assert node.op is not None
                self.simple(f"{head} with {value(node.op, source)}", node.span, depth)
            else:
                header_end = _brace_line(node.amount.span, source)
                self.block(head, node.span, header_end, node.block.items, depth)
        elif isinstance(node, ast.Train) and node.block is not None:
            head = f"train {value(node.duration, source)}"
            self.block(head, node.span, _brace_line(node.duration.span, source), node.freezes, depth)
        elif isinstance(node, ast.Train):
            self.simple(f"train {value(node.duration, source)}", node.span, depth)
        elif isinstance(node, ast.Freeze):
            self.simple(f"freeze {value(node.target, source)}", node.span, depth, _long("freeze ", node.target, source))
        elif isinstance(node, ast.LrScale):
            scales = " ".join(f"{a.name.value if a.name else ''}={value(a.value, source)}" for a in node.args)
            self.simple(f"lr_scale {scales}", node.span, depth)
        elif isinstance(node, ast.Rewarm):
            self.simple(f"rewarm {value(node.duration, source)}", node.span, depth)
        elif isinstance(node, ast.Reset):
            self.simple(f"reset {node.target.value}", node.span, depth)
        elif isinstance(node, ast.Candidates):
            long = _long("candidates ", node.value, source)
            self.simple(f"candidates {value(node.value, source)}", node.span, depth, long)
        elif isinstance(node, ast.Probe):
            self.simple(f"probe {value(node.duration, source)}", node.span, depth)
        elif isinstance(node, ast.Select):
            window = f" over last {value(node.window, source)}" if node.window is not None else ""
            if node.positions is not None:
                start, end = node.positions
                window += f" at positions {value(start, source)}..{value(end, source) if end is not None else ''}"
            self.simple(f"select {node.direction.value} {node.metric.value}{window}", node.span, depth)
        elif isinstance(node, ast.Keep):
            self.simple(f"keep {node.mode.value}", node.span, depth)
        else:  # pragma: no cover - the tree has no other kinds
            raise TypeError(f"cannot format {type(node).__name__}")


@dataclass(frozen=True)
class Long:
    """A list or call laid out one item a line: the text up to its bracket, its items, the closing
    bracket, and the source line each item ends on."""

    head: str
    items: list[str]
    close: str
    lines: list[int]


def _long(head: str, node: ast.Value, source: Source) -> Long | None:
    """`head` and a list or call laid out one item a line (None for other values)."""
    if isinstance(node, ast.List):
        items = [value(item, source) for item in node.items]
        return Long(head + "[", items, "]", [item.span.end_line for item in node.items])
    if isinstance(node, ast.Call):
        items = [(f"{a.name.value}=" if a.name is not None else "") + value(a.value, source) for a in node.args]
        return Long(f"{head}{node.func.value}(", items, ")", [a.span.end_line for a in node.args])
    return None


def _setting(node: ast.Setting, source: Source) -> str:
    key = node.key.value
    text = f"{key} {value(node.value, source)}"
    if key in ("eval", "checkpoint", "log"):
        text = f"{key} every {value(node.value, source)}"
        if node.extra or node.options:  # written parentheses stay, empty ones too
            text += f" ({args(node.extra, source)})"
    elif node.extra:  # batch N accumulate M
        text += f" accumulate {value(node.extra[0].value, source)}"
    return text


def _brace_line(before: Span, source: Source) -> int:
    """The source line of the `{` that follows `before` (comments skipped)."""
    for line in range(before.end_line, len(source.lines) + 1):
        text = source.line_text(line)
        if line == before.end_line:
            text = text[before.end_column - 1 :]
        code = COMMENT_OR_STRING.sub(lambda m: "" if m.group(0).startswith("#") else m.group(0), text)
        if "{" in code:
            return line
    return before.end_line


def _comments(source: Source) -> Iterator[_Comment]:
    for number in range(1, len(source.lines) + 1):
        text = source.line_text(number)
        for match in COMMENT_OR_STRING.finditer(text):
            if match.group(0).startswith("#"):
                yield _Comment(number, match.group(0).rstrip(), bool(text[: match.start()].strip()))


def _render(lines: list[_Line]) -> str:
    """The lines as text, trailing comments of consecutive lines aligned."""
    while lines and not lines[-1].code:
        lines.pop()
    out: list[str] = []
    index = 0
    while index < len(lines):
        if not lines[index].comment:
            out.append(lines[index].code.rstrip())
            index += 1
            continue
        end = index
        while end < len(lines) and lines[end].comment:
            end += 1
        column = max(len(line.code) for line in lines[index:end]) + COMMENT_GAP
        out.extend(line.code.ljust(column) + line.comment for line in lines[index:end])
        index = end
    return "\n".join(out) + "\n" if out else ""
