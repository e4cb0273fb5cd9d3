"""Syntax errors in the language's words: lark's exceptions become diagnostics, and the parse is
repaired where a mistake is common, so that one mistake gives one error. `parser.parse` calls
`translate` and `recover` from its error handler; nothing else sees lark's exceptions.
"""

from __future__ import annotations

import contextlib
import re

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr

from lagdsl.lang.diagnostics import Diagnostic, did_you_mean, one_of
from lagdsl.lang.source import Source, Span


def token_span(token: Token) -> Span:
    """A token's span (the contextual lexer always sets its positions)."""
    assert token.line is not None and token.column is not None
    assert token.end_line is not None and token.end_column is not None
    return Span(token.line, token.column, token.end_line, token.end_column)


def recover(error: UnexpectedToken, source: Source, end: int) -> int:
    """Repair the parse where a mistake is common, so that one mistake gives one error: a word
    where a unit belongs (`train 100 epochs`) is read as `steps`; an unknown word where a statement
    begins (a misspelled setting) takes the rest of its line with it. Returns where the skipped
    text ends."""
    token, interactive = error.token, error.interactive_parser
    expected = set(getattr(error, "accepts", None) or error.expected)
    if token.type == "NAME" and expected and expected <= _UNITS:
        with contextlib.suppress(UnexpectedInput):
            interactive.feed_token(Token.new_borrow_pos("STEPS", "steps", token))
        return end
    lexer = interactive.lexer_thread.state
    if token.type == "NAME" and expected >= _TOP_KEYWORDS and lexer is not None:
        line_end = source.text.find("\n", end)
        line_end = len(source.text) if line_end < 0 else line_end
        lexer.line_ctr.feed(source.text[end:line_end])
        return line_end
    if token.type in ("RPAR", "RSQB") and "NAME" in expected and expected & {"NUMBER", "STRING"}:
        # a value left out before a closing bracket (`copy_top(noise=)`): stand in a placeholder,
        # then close the bracket, so that what follows is read as it is
        with contextlib.suppress(UnexpectedInput):
            interactive.feed_token(Token.new_borrow_pos("NAME", "x", token))
            interactive.feed_token(token)
        return end
    stack = interactive.parser_state.value_stack
    after = _end_of(stack[-1]) if stack else None
    unfinished = after is not None and token.line is not None and after[0] < token.line
    if (expected == {"NUMBER"} and token.type == "LBRACE") or (unfinished and expected & {"NUMBER", "NAME"}):
        # `repeat {`, or a statement left unfinished at the end of its line (`batch`): stand in a
        # placeholder for what is missing, then read the token that came instead as it is
        for kind, text in (("NUMBER", "1"), ("NAME", "x")):
            if kind in expected:
                with contextlib.suppress(UnexpectedInput):
                    interactive.feed_token(Token.new_borrow_pos(kind, text, token))
                    interactive.feed_token(token)
                break
    return end


_UNITS = {"STEPS", "STEP", "TOKENS", "TOKEN", "PERCENT"}
_DURATION_KEYWORDS = {"PROBE", "TRAIN", "REWARM", "TOTAL", "_EVERY", "_LAST"}
_TOP_KEYWORDS = {"SCHEDULE", "SEED", "MODEL", "BATCH", "OPERATOR", "POOL", "STAGE", "REPEAT"}
_VALUE_STARTS = {"NUMBER", "STRING", "NAME", "LSQB", "LPAR"}
_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "$END": "end of file",
}


def _terminal_word(name: str, parser: Lark) -> str:
    if name in _WORDS:
        return _WORDS[name]
    terminal = parser.get_terminal(name) if name in parser._terminals_dict else None
    if terminal is not None and isinstance(terminal.pattern, PatternStr):
        return f"`{terminal.pattern.value}`"
    return name.lower()


def _glued_keyword(previous: object, token: Token, source: Source, parser: Lark) -> Diagnostic | None:
    """A keyword with letters glued on (`5 stepz`, `grow depth tox 4`): where only keywords may
    stand, the lexer reads the keyword and trips on the rest. Report the whole word instead."""
    if not isinstance(previous, Token) or token.type == "$END" or previous.start_pos is None:
        return None
    keyword = str(previous.value)
    if not (keyword.isidentifier() and previous.end_pos == token.start_pos and str(token.value)[:1].isalnum()):
        return None
    if previous.type not in parser._terminals_dict or not isinstance(
        parser.get_terminal(previous.type).pattern, PatternStr
    ):
        return None  # a name or a number, not a keyword
    word = re.compile(r"[A-Za-z0-9_]+").match(source.text, previous.start_pos)
    assert word is not None
    assert previous.line is not None and previous.column is not None
    span = Span(previous.line, previous.column, previous.line, previous.column + len(word.group()))
    units = previous.type in _UNITS
    choices = ["steps", "tokens"] if units else _all_keywords(parser)
    return Diagnostic(
        "E0001",
        f"expected {'a unit after the number: `steps`, `tokens` or `%`' if units else 'a keyword'}, "
        f"found `{word.group()}`",
        span,
        "unexpected here",
        did_you_mean(word.group(), choices) or (f"a space after `{keyword}`?" if not units else None),
    )


def _all_keywords(parser: Lark) -> list[str]:
    return _keywords(set(parser._terminals_dict), parser)


def _keywords(names: set[str], parser: Lark) -> list[str]:
    """The keyword spellings among the expected terminal names."""
    words = []
    for name in names:
        if name in parser._terminals_dict:
            pattern = parser.get_terminal(name).pattern
            if isinstance(pattern, PatternStr) and pattern.value.isidentifier():
                words.append(pattern.value)
    return sorted(words)


def _describe_expected(expected: set[str], previous: str | None, parser: Lark) -> str:
    if expected and expected <= _UNITS:
        return "a unit after the number: `steps`, `tokens` or `%`"
    if previous in _DURATION_KEYWORDS and "NUMBER" in expected:
        return "a duration such as `50 steps`"
    if expected >= _TOP_KEYWORDS:
        return "a setting, `operator`, `pool`, `stage` or `repeat`"
    if expected >= _VALUE_STARTS:
        rest = sorted(_terminal_word(n, parser) for n in expected - _VALUE_STARTS - {"$END"})
        return "a value" + (" or " + ", ".join(rest) if rest else "")
    words = sorted({_terminal_word(n, parser) for n in expected})
    if not words:
        return "something else"
    return _join_words(words)


def _join_words(words: list[str]) -> str:
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _token_span(token: Token, source: Source) -> Span:
    if token.type == "$END" or token.line is None or token.line < 1:
        return source.end_span()
    return token_span(token)


def translate(error: UnexpectedInput, source: Source, parser: Lark) -> Diagnostic:
    """One lark error as a diagnostic in the language's words."""
    if isinstance(error, UnexpectedCharacters):
        assert error.pos_in_stream is not None
        char = source.text[error.pos_in_stream]
        span = Span(error.line, error.column, error.line, error.column + 1)
        if char == '"':
            line = source.line_text(error.line)
            span = Span(error.line, error.column, error.line, len(line) + 1)
            return Diagnostic(
                "E0002",
                "unterminated string",
                span,
                "this string never ends",
                'close it with `"` on the same line',
            )
        shown = char if char.isprintable() else repr(char)[1:-1]
        return Diagnostic("E0002", f"unexpected character `{shown}`", span, "not part of the language")

    assert isinstance(error, UnexpectedToken)
    token = error.token
    expected = set(getattr(error, "accepts", None) or error.expected)  # accepts is exact under LALR
    interactive = getattr(error, "interactive_parser", None)  # absent when lark raised it without one
    stack = interactive.parser_state.value_stack if interactive is not None else []
    previous = stack[-1].type if stack and isinstance(stack[-1], Token) else None
    span = _token_span(token, source)
    glued = _glued_keyword(stack[-1] if stack else None, token, source, parser)
    if glued is not None:
        return glued
    found = "end of file" if token.type == "$END" else f"`{token.value}`"
    keywords = _keywords(expected, parser)
    is_word = token.type != "$END" and str(token.value).isidentifier()

    if is_word and expected >= _TOP_KEYWORDS:
        settings = [k for k in keywords if k not in ("operator", "pool", "stage", "repeat")]
        return Diagnostic(
            "E0101",
            f"unknown setting `{token.value}`",
            span,
            "not a setting",
            did_you_mean(str(token.value), keywords)
            or f"settings are {one_of(settings)}; definitions start with `operator` or `pool`",
        )
    message = f"expected {_describe_expected(expected, previous, parser)}, found {found}"
    help_text = did_you_mean(str(token.value), keywords) if is_word and keywords else None
    if expected and expected <= _UNITS:
        help_text = help_text or "a duration is counted in `steps` or `tokens`, or is a `%` of `total`"
    elif expected == {"NUMBER"} and previous == "REPEAT":
        help_text = "say how many times: `repeat 3 { ... }`"
    label = "unexpected end of file" if token.type == "$END" else "unexpected here"
    if token.type == "$END":
        opened = _unclosed_brace(source.text)
        if opened is not None:
            line, column = opened
            help_text = f"the `{{` opened at {line}:{column} is not closed: add `}}`"
    after = _end_of(stack[-1]) if stack else None
    if after is not None and after[0] < span.line and token.type != "$END":
        # the statement above is what is unfinished (rustc points there too, not at the next line)
        span = Span(after[0], after[1], after[0], after[1] + 1)
        label = f"expected {_describe_expected(expected, previous, parser)} after this"
    return Diagnostic("E0001", message, span, label, help_text)


def _end_of(item: object) -> tuple[int, int] | None:
    """Where a parsed item (a token or a syntax node) ends: (line, column)."""
    if isinstance(item, Token):
        if item.end_line is None or item.end_column is None:
            return None
        return item.end_line, item.end_column
    span = getattr(item, "span", None)
    return (span.end_line, span.end_column) if isinstance(span, Span) else None


def _unclosed_brace(text: str) -> tuple[int, int] | None:
    """(line, column) of the innermost `{` that is never closed, strings and comments skipped."""
    opened: list[int] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "#":
            newline = text.find("\n", i)
            i = len(text) if newline < 0 else newline
        elif char == '"':
            i += 1
            while i < len(text) and text[i] not in '"\n':
                i += 2 if text[i] == "\\" else 1
        elif char == "{":
            opened.append(i)
        elif char == "}" and opened:
            opened.pop()
        i += 1
    if not opened:
        return None
    position = opened[-1]
    line = text.count("\n", 0, position) + 1
    return line, position - (text.rfind("\n", 0, position) + 1) + 1
