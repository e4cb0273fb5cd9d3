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

The transport is resynchronised (`Framer`): a message whose `Content-Length` is short, long or
not a number is answered with a parse error where its id can be read, reported on stderr, and
reading goes on at the next header; a position outside the document is an invalid-params error.

The documents are synchronised whole (each change sends the full text): a schedule is small, and
checking one of 500 lines takes a few tens of milliseconds, so nothing is debounced. Columns go out
and come in as the client counts them (UTF-16 units by default), converted from lagdsl's code points.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from pathlib import Path
from typing import BinaryIO

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcInvalidParams, JsonRpcParseError
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
    """The position in code points; one outside the document is the client's error (invalid params)."""
    lines = document.lines
    inside = 0 <= position.line <= len(lines) and position.character >= 0
    if inside and position.line < len(lines):
        inside = position.character <= len(lines[position.line].rstrip("\r\n").encode("utf-16-le")) // 2
    elif inside:
        inside = position.character == 0  # the end of the text
    if not inside:
        raise JsonRpcInvalidParams(
            f"position {position.line}:{position.character} is outside the document ({len(lines)} lines)"
        )
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


#: the method of the stand-in request for a message that could not be read (`Framer`)
UNREADABLE = "lagdsl/unreadable"


@server.feature(UNREADABLE)
def unreadable(ls: LanguageServer, params: object) -> None:
    raise JsonRpcParseError(getattr(params, "reason", "the message could not be read"))


_HEADER = re.compile(rb"Content-Length:[ \t]*([^\r\n]*)\r?\n", re.IGNORECASE)
_END = re.compile(rb"\r?\n\r?\n")
_ID = re.compile(rb'"id"\s*:\s*(-?\d+|"(?:[^"\\]|\\.)*")')


class Framer:
    """The client's byte stream as well-framed messages, for pygls' reader (`readline`, `read`).

    The base protocol frames each message by its `Content-Length` header, and one wrong length
    would desynchronise every message after it. Here each body is checked as it arrives: one that
    is not whole JSON is cut where the next header starts (a length too long) or dropped up to the
    next header (too short); a header whose length is not a number drops its body. Each loss is
    reported on stderr, and answered with a parse error (as a stand-in `UNREADABLE` request) when
    the message's id can be read, so that a client never waits for a reply that cannot come."""

    CHUNK = 1 << 16

    def __init__(self, stream: BinaryIO, log: BinaryIO | None = None) -> None:
        self.stream, self.log = stream, log
        self.buffer = b""  # read from the client, not yet framed
        self.out = b""  # framed, not yet handed to pygls
        self.closed = False
        self.skipping = False  # the rest of a message that could not be read lies before the next header
        self.lock = threading.Lock()

    # -- pygls' side

    def readline(self) -> bytes:
        with self.lock:
            if not self.out:
                self.out = self._next()
            cut = self.out.find(b"\n") + 1 or len(self.out)
            line, self.out = self.out[:cut], self.out[cut:]
            return line

    def read(self, n: int) -> bytes:
        with self.lock:
            data, self.out = self.out[:n], self.out[n:]
            return data

    # -- the client's side

    def _fill(self) -> bool:
        if self.closed:
            return False
        chunk = self.stream.read1(self.CHUNK) if hasattr(self.stream, "read1") else self.stream.read(self.CHUNK)
        if not chunk:
            self.closed = True
            return False
        self.buffer += chunk
        return True

    def _say(self, what: str) -> None:
        print(f"lagdsl lsp: {what}", file=sys.stderr, flush=True)

    def _next(self) -> bytes:
        """The next message framed (`b""` at the end of the stream)."""
        while True:
            if self.skipping:
                self.skipping = False
                self._drop_to_header()
            header = _HEADER.search(self.buffer)
            end = _END.search(self.buffer, header.start()) if header else None
            if header is None or end is None:
                if not self._fill():
                    if self.buffer.strip():
                        self._say(f"ignored {len(self.buffer)} bytes at the end of the input (no message header)")
                    return b""
                continue
            if self.buffer[: header.start()].strip():
                self._say(f"skipped {header.start()} bytes that were not a message")
            value, rest = header.group(1).strip(), end.end()
            if not value.isdigit():
                self._say(f"a message header has Content-Length `{value.decode(errors='replace')}`, not a number:"
                          " its message is skipped")  # fmt: skip
                self.buffer = self.buffer[rest:]
                self.skipping = True
                continue
            length = int(value)
            while len(self.buffer) < rest + length and not self._whole(rest):
                if not self._fill():
                    break
            framed = self._body(rest, length)
            if framed is not None:
                return framed

    def _whole(self, start: int) -> bool:
        """Whether a whole JSON value and then the next header are in the buffer after `start` (a
        length too long: do not wait for bytes that belong to the next message)."""
        following = _HEADER.search(self.buffer, start)
        if following is None:
            return False
        try:
            json.loads(self.buffer[start : following.start()])
        except ValueError:
            return False
        return True

    def _body(self, start: int, length: int) -> bytes | None:
        body = self.buffer[start : start + length]
        try:
            json.loads(body)
        except ValueError:
            pass
        else:
            self.buffer = self.buffer[start + length :]
            return b"Content-Length: %d\r\n\r\n" % len(body) + body
        following = _HEADER.search(self.buffer, start)
        if following is not None and following.start() < start + length:  # too long: the next one began
            body = self.buffer[start : following.start()]
            self.buffer = self.buffer[following.start() :]
            try:
                json.loads(body)
            except ValueError:
                return self._lost(body, f"a message ({len(body)} bytes) is not JSON")
            self._say(f"a message said Content-Length {length} but had {len(body)} bytes: read as {len(body)}")
            return b"Content-Length: %d\r\n\r\n" % len(body) + body
        self.buffer = self.buffer[start + length :]
        self.skipping = True  # after answering: the rest of it may come only with the next message
        return self._lost(body, f"a message said Content-Length {length} and its {length} bytes are not whole JSON")

    def _drop_to_header(self) -> None:
        """Drop what comes before the next header (the rest of a message that cannot be read)."""
        while (following := _HEADER.search(self.buffer)) is None:
            self.buffer = self.buffer[-64:]  # a header may straddle two reads
            if not self._fill():
                self.buffer = b""
                return
        self.buffer = self.buffer[following.start() :]

    def _lost(self, body: bytes, reason: str) -> bytes | None:
        found = _ID.search(body)
        self._say(reason + (": answered with a parse error" if found else ": skipped"))
        if found is None:
            return None
        stand_in = {"jsonrpc": "2.0", "id": json.loads(found.group(1)), "method": UNREADABLE,
                    "params": {"reason": reason}}  # fmt: skip
        data = json.dumps(stand_in).encode()
        return b"Content-Length: %d\r\n\r\n" % len(data) + data


def main() -> None:
    server.start_io(stdin=Framer(sys.stdin.buffer))  # type: ignore[arg-type]
