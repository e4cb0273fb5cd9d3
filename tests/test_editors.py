"""The editor files: the TextMate grammar colours every `.grow` file we ship as the parser reads it,
and the VS Code extension folder holds together."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
from lark import Lark, Token
from textmate_grammar.parsers.base import LanguageParser

from lagdsl.lang.catalogue import BUILTIN_OPERATORS, DATA, LR_SCHEDULES, MODELS, OPTIMIZERS
from lagdsl.lang.explain import examples
from lagdsl.lang.parser import build_parser, grammar_path, parse
from lagdsl.lang.source import Source
from tests.conftest import GOLDEN, ROOT, SCHEDULES

GRAMMAR_FILE = ROOT / "editors" / "grow.tmLanguage.json"
GRAMMAR = json.loads(GRAMMAR_FILE.read_text())
FILES = [
    *SCHEDULES,
    *sorted((ROOT / "bench").glob("*.grow")),
    *sorted((ROOT / "lagdsl" / "templates").glob("*.grow")),
    *[p for p in sorted(GOLDEN.glob("*.grow")) if not parse(Source(p.name, p.read_text()))[1]],  # odd corners
]
TEXTS = [(p.name, p.read_text()) for p in FILES] + [("E0304 fixed", examples("E0304")[1])]
PUNCTUATION = {"LPAR", "RPAR", "LBRACE", "RBRACE", "LSQB", "RSQB", "COMMA", "EQUAL"}


@pytest.fixture(scope="module")
def tokenizer() -> object:
    return LanguageParser(GRAMMAR)


def scopes_by_position(tokenizer: object, text: str) -> dict[tuple[int, int], list[str]]:
    """Each character's scopes, by its 0-based (line, column)."""
    element = tokenizer.parse_string(text)  # type: ignore[attr-defined]
    found: dict[tuple[int, int], list[str]] = {}
    for (line, column), piece, scopes in element.flatten():
        for offset in range(len(piece)):
            found[(line, column + offset)] = scopes
    return found


@pytest.mark.parametrize(("name", "text"), TEXTS, ids=[n for n, _ in TEXTS])
def test_the_grammar_colours_every_token_as_the_parser_reads_it(tokenizer: object, name: str, text: str) -> None:
    scopes = scopes_by_position(tokenizer, text)
    lines = text.split("\n")
    for (line, _), these in scopes.items():
        assert not any("invalid" in s for s in these), (name, line + 1, lines[line])
    for token in _tokens(text):
        assert token.line is not None and token.column is not None
        these = scopes.get((token.line - 1, token.column - 1), [])
        inner = these[-1] if len(these) > 1 else ""
        expected = _expected(token.type, text[token.end_pos :] if token.end_pos is not None else "")
        assert inner.startswith(expected), f"{name}:{token.line}:{token.column}: `{token}` ({token.type}) is {these}"


def _tokens(text: str) -> list[Token]:
    """Every token as the parser reads it (its contextual lexer: `lr=` in a call is a name), comments too."""
    comments: list[Token] = []
    parser = Lark(
        grammar_path().read_text(),
        parser="lalr",
        lexer="contextual",
        keep_all_tokens=True,
        lexer_callbacks={"COMMENT": comments.append},
    )
    tree = parser.parse(text)
    return [*tree.scan_values(lambda value: isinstance(value, Token)), *comments]


def _expected(kind: str, after: str) -> tuple[str, ...]:
    """The scopes a token of the lark grammar may have."""
    if kind == "COMMENT":
        return ("comment.",)
    if kind == "STRING":
        return ("string.",)
    if kind == "NUMBER":
        return ("constant.numeric",)
    if kind in PUNCTUATION:
        return ("punctuation.", "keyword.operator")
    if kind == "NAME":
        return ("variable.", "entity.", "support.", "constant.language")
    if after.lstrip().startswith("("):  # `tokens(...)`, a data source; `100 steps (batches=8)`, a unit
        return ("keyword.", "storage.type", "support.function")
    return ("keyword.", "storage.type")


def test_the_grammar_knows_every_keyword_operator_and_function() -> None:
    text = GRAMMAR_FILE.read_text()
    words = {str(t.pattern.value) for t in build_parser(strict=True).terminals if t.pattern.type == "str"}
    for word in sorted(w for w in words if w.isalpha()):
        assert re.search(rf"[|(]{word}\??(s\?)?[|)]", text), f"`{word}` is not in the TextMate grammar"
    operators = set(re.search(r'"support.function.operator.grow",\s*"match": "\\\\b\(([^)]*)\)', text)[1].split("|"))
    assert operators == {e.name for e in BUILTIN_OPERATORS}
    functions = {*MODELS, *DATA, *OPTIMIZERS, *LR_SCHEDULES}
    assert set(re.search(r'"support.function.grow",\s*"match": "\\\\b\(([^)]*)\)', text)[1].split("|")) == functions


def test_the_vs_code_extension_uses_the_grammar_and_starts_the_server() -> None:
    folder = ROOT / "editors" / "vscode"
    manifest = json.loads((folder / "package.json").read_text())
    (language,) = manifest["contributes"]["languages"]
    assert language["id"] == "grow" and language["extensions"] == [".grow"]
    (grammar,) = manifest["contributes"]["grammars"]
    assert grammar["scopeName"] == GRAMMAR["scopeName"] == "source.grow"
    assert json.loads((folder / grammar["path"]).read_text()) == GRAMMAR  # the same grammar, not a copy
    assert (folder / language["configuration"]).is_file()
    assert json.loads((folder / language["configuration"]).read_text())["comments"]["lineComment"] == "#"
    assert "vscode-languageclient" in manifest["dependencies"]
    assert manifest["activationEvents"] == ["onLanguage:grow"]


def test_the_grammar_file_is_the_one_the_extension_links() -> None:
    link = ROOT / "editors" / "vscode" / "syntaxes" / "grow.tmLanguage.json"
    assert link.is_symlink() and link.resolve() == GRAMMAR_FILE.resolve()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("setting", [None, "project/.venv/bin/lagdsl"])
def test_the_extension_starts_lagdsl_lsp_for_grow_documents(setting: str | None) -> None:
    env = {**os.environ, **({"LAGDSL_PATH": setting} if setting else {})}
    script = ROOT / "editors" / "vscode" / "test" / "activate.js"
    result = subprocess.run(["node", str(script)], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["server"]["run"] == {"command": setting or "lagdsl", "args": ["lsp"]}
    assert {"scheme": "file", "language": "grow"} in seen["options"]["documentSelector"]
    assert seen["started"] and seen["stopped"] and seen["subscriptions"] == 1 and "error" not in seen
