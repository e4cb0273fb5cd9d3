"""`lagdsl lsp`: a language server for `.grow` files, over stdio (pygls; `pip install lagdsl[lsp]`).

- diagnostics as you type: `lagdsl validate`'s, with the same codes and spans, each linked to
  `lagdsl explain CODE` by its code;
- hover: an operator's catalogue entry (parameters, defaults, what it preserves), a function's
  signature (`gpt`, `adamw`, `cosine`, ...), what a setting or keyword does, a named operator's
  or pool's definition;
- completion: keywords and settings for the block the cursor is in, operators after `with` and in
  candidate lists, pools after `candidates`, the choices of each setting, stage names;
- go to definition of named operators, pools and stages;
- formatting: `lagdsl fmt`'s layout (a file with syntax errors is left as it is).

The documents are synchronised whole (each change sends the full text): a schedule is small, and
checking one of 500 lines takes a few tens of milliseconds, so nothing is debounced. Columns go out
and come in as the client counts them (UTF-16 units by default), converted from lagdsl's code points.
"""

from __future__ import annotations

from pathlib import Path

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path
from pygls.workspace import TextDocument
from pygls.workspace.position_codec import ServerTextPosition

from lagdsl.lang import check_source
from lagdsl.lang import navigate as nav
from lagdsl.lang.diagnostics import Diagnostic, help_text
from lagdsl.lang.fmt import FormatError, as_written, format_source
from lagdsl.lang.source import Source

NAME = "lagdsl"
_KINDS = {
    "keyword": lsp.CompletionItemKind.Keyword,
    "setting": lsp.CompletionItemKind.Property,
    "operator": lsp.CompletionItemKind.Function,
    "pool": lsp.CompletionItemKind.Variable,
    "stage": lsp.CompletionItemKind.Module,
    "function": lsp.CompletionItemKind.Function,
    "value": lsp.CompletionItemKind.EnumMember,
}


def _version() -> str:
    from importlib.metadata import version

    return version("lagdsl")


server = LanguageServer(NAME, _version(), text_document_sync_kind=lsp.TextDocumentSyncKind.Full)


def _source(uri: str, text: str) -> tuple[Source, Path | None]:
    path = to_fs_path(uri)
    return Source(path or uri, text), (Path(path).parent if path else None)


def diagnostics_of(document: TextDocument) -> list[lsp.Diagnostic]:
    """`lagdsl validate`'s diagnostics of the document, as the protocol has them."""
    source, base = _source(document.uri, document.source)
    checked = check_source(source, base=base)
    return [_diagnostic(d, source, document) for d in checked.diagnostics]


def _client(document: TextDocument, line: int, column: int) -> lsp.Position:
    """A 0-based position in code points as the client counts (UTF-16 units unless it chose otherwise)."""
    try:
        return document.position_to_client_units(ServerTextPosition(line, column))
    except (IndexError, ValueError):  # past the end of the text: as it is
        return lsp.Position(line=line, character=column)


def _server(document: TextDocument, position: lsp.Position) -> tuple[int, int]:
    try:
        found = document.position_from_client_units(position)
    except (IndexError, ValueError):
        return position.line, position.character
    return found.line, found.character


def _diagnostic(diagnostic: Diagnostic, source: Source, document: TextDocument) -> lsp.Diagnostic:
    span = source.clamp(diagnostic.span)
    severity = lsp.DiagnosticSeverity.Error if diagnostic.is_error else lsp.DiagnosticSeverity.Warning
    message = diagnostic.message + (f" ({diagnostic.label})" if diagnostic.label else "")
    end_column = max(span.end_column, span.column + 1) if span.end_line == span.line else span.end_column
    return lsp.Diagnostic(
        range=lsp.Range(
            start=_client(document, span.line - 1, span.column - 1),
            end=_client(document, span.end_line - 1, end_column - 1),
        ),
        message=f"{message}\nhelp: {help_text(diagnostic)}",
        severity=severity,
        code=diagnostic.code,
        source=NAME,
    )


def _publish(ls: LanguageServer, uri: str) -> None:
    document = ls.workspace.get_text_document(uri)
    params = lsp.PublishDiagnosticsParams(uri, diagnostics_of(document), document.version)
    ls.text_document_publish_diagnostics(params)


@server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: LanguageServer, params: lsp.DidOpenTextDocumentParams) -> None:
    _publish(ls, params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: LanguageServer, params: lsp.DidChangeTextDocumentParams) -> None:
    _publish(ls, params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: LanguageServer, params: lsp.DidSaveTextDocumentParams) -> None:
    _publish(ls, params.text_document.uri)  # data files next to it may have changed


@server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: LanguageServer, params: lsp.DidCloseTextDocumentParams) -> None:
    ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[]))


def _range(document: TextDocument, place: nav.Place) -> lsp.Range:
    return lsp.Range(
        start=_client(document, place.line, place.column), end=_client(document, place.end_line, place.end_column)
    )


@server.feature(lsp.TEXT_DOCUMENT_HOVER)
def hover(ls: LanguageServer, params: lsp.HoverParams) -> lsp.Hover | None:
    document = ls.workspace.get_text_document(params.text_document.uri)
    found = nav.hover(document.source, *_server(document, params.position))
    if found is None:
        return None
    markdown, place = found
    contents = lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=markdown)
    return lsp.Hover(contents=contents, range=_range(document, place))


@server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=[" ", "[", ","]))
def completion(ls: LanguageServer, params: lsp.CompletionParams) -> lsp.CompletionList:
    document = ls.workspace.get_text_document(params.text_document.uri)
    found = nav.completions(document.source, *_server(document, params.position))
    items = [lsp.CompletionItem(label=c.label, kind=_KINDS[c.kind], detail=c.detail or None) for c in found]
    return lsp.CompletionList(is_incomplete=False, items=items)


@server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
def definition(ls: LanguageServer, params: lsp.DefinitionParams) -> lsp.Location | None:
    uri = params.text_document.uri
    document = ls.workspace.get_text_document(uri)
    place = nav.definition(document.source, *_server(document, params.position))
    return lsp.Location(uri=uri, range=_range(document, place)) if place is not None else None


@server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
def formatting(ls: LanguageServer, params: lsp.DocumentFormattingParams) -> list[lsp.TextEdit] | None:
    uri = params.text_document.uri
    text = ls.workspace.get_text_document(uri).source
    source, _ = _source(uri, text)
    try:
        formatted = format_source(source)
    except FormatError:
        return None  # the diagnostics already show the syntax errors
    formatted = as_written(formatted, text)  # the document's line ends
    if formatted == text:
        return []
    lines = text.split("\n")
    whole = lsp.Range(start=lsp.Position(line=0, character=0), end=lsp.Position(line=len(lines), character=0))
    return [lsp.TextEdit(range=whole, new_text=formatted)]


def main() -> None:
    server.start_io()
