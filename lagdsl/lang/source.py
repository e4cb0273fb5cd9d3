"""Source text and positions: what every diagnostic and syntax node points into."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True, slots=True)
class Span:
    """A range in one source file: 1-based lines and columns, the end column exclusive."""

    line: int
    column: int
    end_line: int
    end_column: int

    @staticmethod
    def cover(first: Span, last: Span) -> Span:
        """The span from the start of `first` to the end of `last`."""
        return Span(first.line, first.column, last.end_line, last.end_column)


@dataclass(frozen=True)
class Source:
    """A `.grow` file's text and the name it is reported under."""

    name: str
    text: str

    @cached_property
    def lines(self) -> list[str]:
        """The lines as the parser counts them: split on newlines only."""
        return self.text.split("\n")

    def line_text(self, line: int) -> str:
        """The text of a 1-based line (without a trailing carriage return), or empty past the end."""
        return self.lines[line - 1].removesuffix("\r") if 1 <= line <= len(self.lines) else ""

    def end_span(self) -> Span:
        """A one-column span just after the last non-blank character: where end of file is shown."""
        for index in range(len(self.lines), 0, -1):
            text = self.line_text(index).rstrip()
            if text:
                return Span(index, len(text) + 1, index, len(text) + 2)
        return Span(1, 1, 1, 2)

    def clamp(self, span: Span) -> Span:
        """The span moved inside the file (lark reports end of file as line -1)."""
        if span.line < 1 or span.line > len(self.lines):
            return self.end_span()
        return span
