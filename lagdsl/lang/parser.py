"""Parse `.grow` text into a syntax tree, translating every lark error into a diagnostic.

The grammar (`grammars/grow.lark`) is built once per process, LALR, and cached on disk by lark, so
`lagdsl validate` pays for the table construction only the first time. This module is the one
place that knows about lark's exceptions: nothing else sees them.
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import re
from functools import cache
from importlib import resources
from pathlib import Path

import lark
from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from lagdsl.lang import syntax as ast
from lagdsl.lang.builder import BUILDER, LEXICAL
from lagdsl.lang.diagnostics import Diagnostic
from lagdsl.lang.source import Source, Span
from lagdsl.lang.syntax_errors import recover, token_span, translate

GRAMMAR_NAME = "grow.lark"
_MAX_SYNTAX_ERRORS = 20
#: Tokens the parser may skip while recovering from syntax errors before it gives up on the file
#: (100 KB of `((((` would otherwise take seconds, one exception per character).
_MAX_SKIPS = 1000


class BrokenInstall(RuntimeError):
    """lagdsl's own files are missing or unreadable: nothing a schedule can fix."""


def grammar_path() -> Path:
    """The grammar file: inside the installed package, else in the source tree's `grammars/`."""
    packaged = resources.files("lagdsl") / "grammars" / GRAMMAR_NAME
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "grammars" / GRAMMAR_NAME


def _cache_file(grammar: str) -> str | bool:
    """Where lark keeps the built tables: a per-user file named by the grammar and lark's version.

    Lark's own default is a shared temporary directory; a per-user directory keeps other users
    from planting a table there. Without a writable cache directory, nothing is cached.
    """
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lagdsl"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    key = hashlib.sha256(f"{lark.__version__}\n{grammar}".encode()).hexdigest()[:16]
    return str(root / f"grow-{key}.lark-cache")


@cache
def build_parser(*, strict: bool = False) -> Lark:
    """The LALR parser, built once per process and cached on disk.

    It builds syntax nodes as it reduces (see `lagdsl.lang.builder`); `strict=True` instead gives a plain
    parser that fails on any conflict or terminal collision (the grammar's test).
    """
    path = grammar_path()
    try:
        grammar = path.read_text(encoding="utf-8")
    except OSError as error:
        raise BrokenInstall(
            f"lagdsl's grammar `{path}` cannot be read ({error.strerror or error}): the installation is "
            "incomplete; reinstall lagdsl (`pip install -e .` in a source tree)"
        ) from None
    if strict:
        return Lark(grammar, parser="lalr", lexer="contextual", strict=True, maybe_placeholders=True)
    return Lark(
        grammar,
        parser="lalr",
        lexer="contextual",
        transformer=BUILDER,
        keep_all_tokens=True,
        maybe_placeholders=True,
        cache=_cache_file(grammar),
        lexer_callbacks=dict.fromkeys(_keywords(grammar), _not_glued),
    )


def _keywords(grammar: str) -> list[str]:
    """The terminals that are words (`STAGE: "stage"`)."""
    return re.findall(r'^([A-Z_]+): "[a-z]+"$', grammar, re.M)


def _not_glued(token: Token) -> Token:
    """A keyword followed at once by a letter, digit or `_` (`seed7`, `stepsselect`): where no name
    may stand, the lexer takes the keyword and leaves the rest, but a reader sees one word."""
    text = _TEXT.get()
    end = token.end_pos
    if end is not None and end < len(text) and (text[end].isalnum() or text[end] == "_"):
        word = _GLUED.match(text, token.start_pos or 0)
        assert word is not None
        rest = word.group(0)[len(token) :]
        span = token_span(token)
        LEXICAL.get().append(
            Diagnostic(
                "E0001",
                f"`{word.group(0)}` is the keyword `{token}` glued to `{rest}`",
                Span(span.line, span.column, span.line, span.column + len(word.group(0))),
                "one word",
                f"put a space between them: `{token} {rest}`",
            )
        )
    return token


#: The text of the parse in progress, for the lexer's checks.
_TEXT: contextvars.ContextVar[str] = contextvars.ContextVar("lagdsl_parse_text")


#: A run of characters that may belong to one word or number: skipped as a whole after a lexical error.
_WORD = re.compile(r"[A-Za-z0-9_.]+")
_GLUED = re.compile(r"[A-Za-z0-9_]+")


def parse(source: Source) -> tuple[ast.Module | None, list[Diagnostic]]:
    """The syntax tree and the syntax diagnostics. With diagnostics, the tree is what the repaired
    parse built (None where the parse gave up): good for the checks that cannot be misled by the
    repair (`lang.check_source` keeps only those).

    After a syntax error the parser skips tokens until it can go on, so one run reports several
    independent mistakes; an error right after another (no token accepted between them) is taken
    to follow from the first and is not reported.
    """
    parser = build_parser()
    diagnostics: list[Diagnostic] = []  # syntax errors
    last_skipped_end = -1

    def follows_last_error(start: int) -> bool:
        between = source.text[last_skipped_end:start] if last_skipped_end >= 0 else "x"
        return re.fullmatch(r"(?:\s|#[^\n]*)*", between) is not None

    skips = 0

    def on_error(error: UnexpectedInput) -> bool:
        nonlocal last_skipped_end, skips
        skips += 1
        if skips > _MAX_SKIPS and diagnostics:
            return False  # a file this broken has said enough: stop, in bounded time
        if isinstance(error, UnexpectedToken):
            token = error.token
            at_end = token.type == "$END"
            start = len(source.text) if at_end else token.start_pos
            end = start if at_end else token.end_pos
        else:
            assert error.pos_in_stream is not None  # the lexer always knows where it stopped
            at_end, start = False, error.pos_in_stream
            end = start + 1
        # an error right after another follows from it; so does running into the end of the file
        if not follows_last_error(start) and not (at_end and diagnostics):
            diagnostics.append(translate(error, source, parser))
        if not at_end and isinstance(error, UnexpectedToken):
            end = recover(error, source, end)
        if isinstance(error, UnexpectedCharacters):
            if source.text[start] == '"':
                return False  # an unterminated string: whatever follows would be misread
            # skip the whole word the lexer could not read (`1000x`), not one character of it: the
            # lexer would read the rest of the word again at every character (quadratic time)
            word = _WORD.match(source.text, start)
            lexer = error.interactive_parser.lexer_thread.state
            if word is not None and word.end() > start + 1 and lexer is not None:
                end = word.end()
                lexer.line_ctr.feed(source.text[start : end - 1])  # lark feeds the last character
        last_skipped_end = end
        if at_end:
            return False
        return len(diagnostics) < _MAX_SYNTAX_ERRORS

    built: list[Diagnostic] = []
    token, text = LEXICAL.set(built), _TEXT.set(source.text)
    try:
        module = parser.parse(source.text, on_error=on_error)
    except UnexpectedInput:
        return None, diagnostics
    finally:
        LEXICAL.reset(token)
        _TEXT.reset(text)
    if built:  # lexical trouble (values nested too deeply, a bad number): no tree to check
        return None, diagnostics or built
    assert isinstance(module, ast.Module)
    return module, diagnostics
