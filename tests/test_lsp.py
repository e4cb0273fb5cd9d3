"""`lagdsl lsp`, driven as an editor drives it: pygls' client talks to `python -m lagdsl lsp`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pygls")
from lsprotocol import types as lsp
from pygls.lsp.client import LanguageClient
from pygls.uris import from_fs_path

from lagdsl.lang import check_text
from lagdsl.lang import navigate as nav
from lagdsl.lang.fmt import format_text

TEXT = """\
schedule demo
model gpt(context=64, width=64, heads=4, depth=2)
batch 16
optimizer adamw(lr=3e-3)

operator top = copy_top(noise=0.01)
pool ops = [top, midas]

stage base {
  train 100 steps
}

stage deeper {
  grow depth by 2 {
    candidates ops
    probe 10 steps
  }
  train 100 steps
}
"""


class Session:
    """A client with the diagnostics the server published, per document."""

    def __init__(self, client: LanguageClient) -> None:
        self.client = client
        self.published: dict[str, list[lsp.Diagnostic]] = {}
        self.arrived = asyncio.Event()

    async def diagnostics(self, uri: str, send: Callable[[], None]) -> list[lsp.Diagnostic]:
        self.arrived.clear()
        send()
        await asyncio.wait_for(self.arrived.wait(), 30)
        return self.published[uri]


def with_server(body: Callable[[Session], Awaitable[None]]) -> None:
    async def main() -> None:
        client = LanguageClient("lagdsl-test", "v1")
        session = Session(client)

        @client.feature(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def on_diagnostics(params: lsp.PublishDiagnosticsParams) -> None:
            session.published[params.uri] = params.diagnostics
            session.arrived.set()

        await client.start_io(sys.executable, "-m", "lagdsl", "lsp")
        try:
            result = await asyncio.wait_for(
                client.initialize_async(lsp.InitializeParams(capabilities=lsp.ClientCapabilities())), 60
            )
            assert result.capabilities.hover_provider and result.capabilities.definition_provider
            assert result.capabilities.document_formatting_provider
            client.initialized(lsp.InitializedParams())
            await body(session)
        finally:  # shut down politely even after a failed assertion, or the server would outlive the test
            with suppress(Exception):
                await asyncio.wait_for(client.shutdown_async(None), 10)
                client.exit(None)
            await asyncio.wait_for(client.stop(), 30)

    asyncio.run(main())


def opened(uri: str, text: str) -> lsp.DidOpenTextDocumentParams:
    return lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri=uri, language_id="grow", version=1, text=text))


def changed(uri: str, text: str, version: int) -> lsp.DidChangeTextDocumentParams:
    return lsp.DidChangeTextDocumentParams(
        text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[lsp.TextDocumentContentChangeWholeDocument(text=text)],
    )


def at(uri: str, line: int, character: int) -> dict[str, Any]:
    return {"text_document": lsp.TextDocumentIdentifier(uri=uri), "position": lsp.Position(line, character)}


def test_an_editor_session_diagnoses_hovers_completes_finds_and_formats(tmp_path: Path) -> None:
    path = tmp_path / "demo.grow"
    uri = from_fs_path(str(path))
    assert uri is not None
    broken = TEXT.replace("midas]", "midsa]")

    async def body(s: Session) -> None:
        client = s.client
        clean = await s.diagnostics(uri, lambda: client.text_document_did_open(opened(uri, TEXT)))
        assert list(clean) == []

        # a one-character edit: the same code and span as `lagdsl validate`
        found = await s.diagnostics(uri, lambda: client.text_document_did_change(changed(uri, broken, 2)))
        expected = check_text(broken, str(path)).diagnostics
        assert [(d.code, d.range.start.line + 1, d.range.start.character + 1) for d in found] == [
            (e.code, e.span.line, e.span.column) for e in expected
        ]
        assert found[0].code == "E0201" and found[0].severity == lsp.DiagnosticSeverity.Error
        assert "did you mean `midas`?" in found[0].message and "lagdsl explain E0201" in found[0].message
        assert (found[0].range.end.character - found[0].range.start.character) == len("midsa")

        # hover: an operator's catalogue entry, a named operator's definition, a setting
        hover = await client.text_document_hover_async(lsp.HoverParams(**at(uri, 5, 18)))
        assert hover is not None and "**copy_top**: grows depth" in hover.contents.value
        assert "noise" in hover.contents.value and "Preserves the function" in hover.contents.value
        named = await client.text_document_hover_async(lsp.HoverParams(**at(uri, 14, 17)))
        assert named is not None and "pool ops = [top, midsa]" in named.contents.value
        setting = await client.text_document_hover_async(lsp.HoverParams(**at(uri, 2, 2)))
        assert setting is not None and "sequences per step" in setting.contents.value

        # completion: statements of a probe block, operators in a candidate list
        in_probe = await client.text_document_completion_async(lsp.CompletionParams(**at(uri, 15, 4)))
        labels = {i.label for i in in_probe.items} if isinstance(in_probe, lsp.CompletionList) else set()
        assert {"candidates", "probe", "select", "keep"} <= labels and "train" not in labels
        in_list = await client.text_document_completion_async(lsp.CompletionParams(**at(uri, 6, 12)))
        labels = {i.label for i in in_list.items} if isinstance(in_list, lsp.CompletionList) else set()
        assert {"copy_top", "midas", "net2net", "top"} <= labels

        # go to definition: the pool named in `candidates ops`
        location = await client.text_document_definition_async(lsp.DefinitionParams(**at(uri, 14, 16)))
        assert isinstance(location, lsp.Location) and location.range.start.line == 6
        assert location.range.start.character == 5

        # columns as the client counts them: UTF-16 units, an emoji being two
        wide = TEXT.replace("batch 16", 'batch 16 device "\N{GRINNING FACE}" precision fp33')
        found = await s.diagnostics(uri, lambda: client.text_document_did_change(changed(uri, wide, 3)))
        (precision,) = [d for d in found if "precision" in d.message]
        code_points = wide.split("\n")[2].index("fp33")
        assert (precision.range.start.line, precision.range.start.character) == (2, code_points + 1)
        assert precision.range.end.character == code_points + 1 + len("fp33")

        # formatting: fmt's layout, as one edit
        messy = TEXT.replace("batch 16", "batch   16")
        await s.diagnostics(uri, lambda: client.text_document_did_change(changed(uri, messy, 4)))
        edits = await client.text_document_formatting_async(
            lsp.DocumentFormattingParams(lsp.TextDocumentIdentifier(uri=uri), lsp.FormattingOptions(2, True))
        )
        assert edits is not None and len(edits) == 1 and edits[0].new_text == format_text(messy) == TEXT

        # a CRLF document keeps its line ends: formatted, it needs no edit; messy, its edit is CRLF
        windows = TEXT.replace("\n", "\r\n")

        async def format_crlf(text: str, version: int) -> list[lsp.TextEdit]:
            await s.diagnostics(uri, lambda: client.text_document_did_change(changed(uri, text, version)))
            edits = await client.text_document_formatting_async(
                lsp.DocumentFormattingParams(lsp.TextDocumentIdentifier(uri=uri), lsp.FormattingOptions(2, True))
            )
            return list(edits or [])

        assert await format_crlf(windows, 5) == []
        (edit,) = await format_crlf(messy.replace("\n", "\r\n"), 6)
        assert edit.new_text == windows

    with_server(body)


def test_completion_follows_the_block_and_the_word_before() -> None:
    def labels(text: str) -> set[str]:
        lines = text.split("\n")
        return {c.label for c in nav.completions(text, len(lines) - 1, len(lines[-1]))}

    assert {"schedule", "model", "stage", "repeat", "operator"} <= labels("")
    assert labels("stage a {\n  ") == {"grow", "rewarm", "reset", "lr_scale", "train"}
    assert labels("stage a {\n  grow depth by 2 {\n    ") == {"candidates", "probe", "select", "keep"}
    stage_words = {"grow", "rewarm", "reset", "lr_scale", "train"}
    assert labels("stage a {\n  grow depth by 2 {\n    probe 10 steps\n  }\n  ") == stage_words
    assert labels("stage a {\n  train 5 steps {\n    ") == {"freeze"}
    assert {"old", "new", "embed", "head", "layers("} <= labels("stage a {\n  train 5 steps {\n    freeze ")
    assert labels("precision ") == {"auto", "fp32", "bf16", "fp16"}
    assert labels("optimizer ad") == {"adamw"}
    assert labels("select lowest ") == {"loss", "val_loss"}
    assert "copy_top" in labels("stage a {\n  grow depth by 1 with co")
    assert labels("pool p = [a]\nstage a {\n  grow depth by 1 {\n    candidates ") == {"p", "["}
    assert "base" in labels("stage base {\n  train 1 steps\n}\n")  # stage names among the top-level words
    assert labels("stage a {\n  train 10 ") == {"steps", "tokens", "%"}


def test_definitions_ignore_comments_and_hover_knows_functions() -> None:
    text = "# operator fake = x\noperator real = copy_top\nmodel gpt(context=8, width=8, heads=2, depth=1)\n"
    assert set(nav.definitions(text)) == {"real"}
    found = nav.hover(text, 2, 7)
    assert found is not None and "**gpt** (`model`)" in found[0] and "context" in found[0]
    assert nav.hover(text, 1, 2) is not None  # `operator`: a keyword
    assert nav.definition(text, 1, 11) == nav.Place(1, 9, 1, 13)


def test_hover_explains_every_setting_and_statement_keyword() -> None:
    from lagdsl.lang.check.settings import _HANDLERS as SETTING_HANDLERS

    assert set(nav.SETTINGS) == {*SETTING_HANDLERS, "model"}  # the model is checked last, apart
    for word in ("operator", "pool", "stage", "repeat", *nav.STAGE_WORDS, *nav.PROBE_WORDS):
        found = nav.hover(f"{word} ", 0, 1)
        assert found is not None and found[0].startswith(f"`{word}"), word


def _frame(message: dict[str, Any], length: int | str | None = None) -> bytes:
    body = json.dumps(message).encode()
    return f"Content-Length: {len(body) if length is None else length}\r\n\r\n".encode() + body


def _replies(stream: Any, wanted: set[int], seconds: float = 30) -> dict[int, dict[str, Any]]:
    """The responses with ids in `wanted`, read frame by frame from the server's stdout."""
    found: dict[int, dict[str, Any]] = {}

    def read() -> None:
        while not wanted <= set(found):
            header = stream.readline()
            if not header:
                return
            if header.lower().startswith(b"content-length:"):
                length = int(header.split(b":")[1])
                while stream.readline().strip():
                    pass
                message = json.loads(stream.read(length))
                if message.get("id") in wanted:
                    found[message["id"]] = message

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(seconds)
    return found


def test_the_server_resynchronises_after_a_wrong_content_length(tmp_path: Path) -> None:
    """A length too short, too long or not a number costs that message alone (answered with a parse
    error where its id can be read), never the ones after it; a position outside the document is
    an invalid-params error, not silence."""
    uri = from_fs_path(str(tmp_path / "demo.grow"))

    def hover(number: int, line: int = 5, character: int = 18) -> dict[str, Any]:
        params = {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}}
        return {"jsonrpc": "2.0", "id": number, "method": "textDocument/hover", "params": params}

    document = {"uri": uri, "languageId": "grow", "version": 1, "text": TEXT}
    server = subprocess.Popen(
        [sys.executable, "-m", "lagdsl", "lsp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert server.stdin is not None and server.stdout is not None and server.stderr is not None
    try:
        start = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}
        server.stdin.write(_frame(start))
        server.stdin.write(_frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
        opened = {"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": document}}
        server.stdin.write(_frame(opened))
        server.stdin.write(_frame(hover(2), 60))  # too short: its id is read, the rest skipped
        server.stdin.write(_frame(hover(3)))
        server.stdin.write(_frame(hover(4), "abc"))
        server.stdin.write(_frame(hover(5)))
        server.stdin.write(_frame(hover(6), len(json.dumps(hover(6))) + 40))  # too long: runs into the next
        server.stdin.write(_frame(hover(7)))
        server.stdin.write(_frame(hover(8, line=999)))
        server.stdin.write(_frame(hover(9, line=5, character=500)))
        server.stdin.flush()
        wanted = {1, 2, 3, 5, 6, 7, 8, 9}  # 4's length is not a number: its id cannot be known
        replies = _replies(server.stdout, wanted)
        assert set(replies) == wanted, f"no reply to {sorted(wanted - set(replies))}"
        assert replies[2]["error"]["code"] == -32700  # parse error: its 60 bytes are not whole JSON
        for number in (3, 5, 6, 7):
            assert "copy_top" in replies[number]["result"]["contents"]["value"]
        for number in (8, 9):
            error = replies[number]["error"]
            assert error["code"] == -32602 and "outside the document" in error["message"]
        server.stdin.write(_frame({"jsonrpc": "2.0", "id": 10, "method": "shutdown"}))
        server.stdin.write(_frame({"jsonrpc": "2.0", "method": "exit"}))
        server.stdin.close()
        assert server.wait(30) == 0
        said = server.stderr.read().decode()
        assert "Content-Length `abc`, not a number" in said and "Content-Length 60" in said
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
