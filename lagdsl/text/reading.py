"""Reading a corpus's documents as a stream: text files a block at a time (a file over `PIECE`
characters cut into pieces at line ends, the same cuts whether read whole or in blocks), JSON
Lines a line at a time, Parquet a row group at a time (`pyarrow`); each file's name and bytes
added to a digest as they are read. Memory is bounded by a block, a line or a row group, never by
a file. `lagdsl.text.encode` tokenizes what this reads."""

from __future__ import annotations

import codecs
import hashlib
import itertools
import json
import tokenize
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import BinaryIO, Literal

PIECE = 1 << 20  # a text file's piece: large enough to be cheap to hand out, small enough to spread
READ_BYTES = 1 << 20  # a read of a file
PARQUET_ROWS = 1024  # rows per batch of a Parquet row group

#: how the files of a corpus hold their documents (`python`: text in the encoding its PEP 263
#: declaration names, UTF-8 without one)
Kind = Literal["text", "python", "jsonl", "parquet"]


class EncodeError(Exception):
    """Input that cannot be tokenized; the message is one line naming the file (and line)."""


def kind_of(field: str | None, kind: Kind | None) -> Kind:
    """The kind given, else text without a field and JSON Lines with one."""
    return kind or ("text" if field is None else "jsonl")


def documents(
    files: list[Path], field: str | None, digest: hashlib._Hash | None = None, kind: Kind | None = None
) -> Iterator[str]:
    """Each document of `files` in order: each text file, or with `field` the field of each line
    of JSON Lines files (or each row's column of Parquet files). `digest` is updated with each
    file's name and bytes."""
    parts: list[str] = []
    for text, last in pieces(files, field, digest, kind):
        parts.append(text)
        if last:
            yield "".join(parts)
            parts = []


def pieces(
    files: list[Path], field: str | None, digest: hashlib._Hash | None = None, kind: Kind | None = None
) -> Iterator[tuple[str, bool]]:
    """The documents of `files` as `documents` gives them, a text file over `PIECE` characters cut
    into pieces at line ends (so that every core has work); each with True when it ends its
    document. Files are read a block at a time (a line of JSON Lines, a row group of Parquet)."""
    kind = kind_of(field, kind)
    for path in files:
        if digest is not None:
            digest.update(path.name.encode() + b"\0")
        if kind == "text":
            yield from _text_pieces(path, digest)
        elif kind == "python":
            yield from _text_pieces(path, digest, source_encoding(path))
        elif kind == "jsonl":
            assert field is not None
            yield from ((document, True) for document in _jsonl_field(path, field, digest))
        else:
            assert field is not None
            yield from ((document, True) for document in _parquet_column(path, field, digest))


def blocks(path: Path, digest: hashlib._Hash | None) -> Generator[bytes, None, None]:
    """The bytes of `path`, a block at a time, each added to `digest`."""
    try:
        with open(path, "rb") as stream:
            while block := stream.read(READ_BYTES):
                if digest is not None:
                    digest.update(block)
                yield block
    except OSError as error:
        raise EncodeError(f"cannot read `{path}`: {error.strerror or error}") from None


def source_encoding(path: Path) -> str:
    """The encoding a Python source file declares (PEP 263: a `coding:` comment in its first two
    lines, or a UTF-8 byte-order mark), UTF-8 where it declares none."""
    try:
        with open(path, "rb") as stream:
            return tokenize.detect_encoding(stream.readline)[0]
    except OSError as error:
        raise EncodeError(f"cannot read `{path}`: {error.strerror or error}") from None
    except SyntaxError as error:
        raise EncodeError(f"`{path}` declares an encoding Python cannot read: {error.msg}") from None


def readable_sources(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """Python source files split into those that decode in the encoding they declare, and the
    others (a standard library's test data holds some on purpose: an unknown or wrong encoding)."""
    kept, left = [], []
    for path in files:
        try:
            path.read_bytes().decode(source_encoding(path))
        except (EncodeError, UnicodeDecodeError, LookupError):
            left.append(path)
        else:
            kept.append(path)
    return kept, left


def _text_pieces(path: Path, digest: hashlib._Hash | None, encoding: str = "utf-8") -> Iterator[tuple[str, bool]]:
    """A text file's pieces: cut at the first line end at or past `PIECE` characters (the rest
    whole when no line ends there), the same cuts whether the file is read whole or in blocks."""
    decoder = codecs.getincrementaldecoder(encoding)()
    text, offset, held = "", 0, None  # decoded and not yet cut; bytes decoded; the last piece cut

    def cut(final: bool) -> Iterator[str]:
        nonlocal text
        while len(text) > PIECE:
            end = text.find("\n", PIECE) + 1
            if not end:
                if not final:
                    return  # the line goes on in the next block
                break
            piece, text = text[:end], text[end:]
            yield piece

    read = blocks(path, digest)
    for block in itertools.chain(read, [b""]):  # the empty block: the end, which flushes the decoder
        final = not block
        pending = len(decoder.getstate()[0])
        try:
            text += decoder.decode(block, final)
        except UnicodeDecodeError as error:
            read.close()
            raise EncodeError(
                f"`{path}` is not UTF-8 text (byte {offset - pending + error.start}): convert it to UTF-8"
            ) from None
        offset += len(block)
        for piece in cut(final):
            if held is not None:
                yield held, False
            held = piece
    if text or held is None:  # the rest; an empty file is one empty document
        if held is not None:
            yield held, False
        held = text
    yield held, True


def _jsonl_field(path: Path, field: str, digest: hashlib._Hash | None) -> Iterator[str]:
    """The `field` of each line of a JSON Lines file, read a line at a time."""
    try:
        stream = open(path, "rb")  # noqa: SIM115 (closed by the `with` below, errors told apart)
    except OSError as error:
        raise EncodeError(f"cannot read `{path}`: {error.strerror or error}") from None
    with stream:
        for number, raw in enumerate(_lines(stream, path, digest), 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError as error:
                raise EncodeError(f"{path}:{number}: not a JSON object ({error}): each line must be one") from None
            except RecursionError:
                raise EncodeError(
                    f"{path}:{number}: values nested too deeply to read (each line: one object)"
                ) from None
            if not isinstance(record, dict):
                raise EncodeError(f"{path}:{number}: a JSON {type(record).__name__}, not an object with `{field}`")
            if field not in record:
                fields = ", ".join(f"`{k}`" for k in list(record)[:6]) or "none"
                raise EncodeError(
                    f"{path}:{number}: no field `{field}` (its fields: {fields}): set `field=` to the text's"
                )
            yield _text_value(record[field], f"{path}:{number}: field `{field}`")


def _lines(stream: BinaryIO, path: Path, digest: hashlib._Hash | None) -> Iterator[bytes]:
    try:
        for line in stream:
            if digest is not None:
                digest.update(line)
            yield line
    except OSError as error:
        raise EncodeError(f"cannot read `{path}`: {error.strerror or error}") from None


def _text_value(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise EncodeError(f"{where} holds a {type(value).__name__}, not text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate (`"\ud800"`): JSON allows it, text has none
        at = error.start
        raise EncodeError(
            f"{where} holds a lone surrogate (\\u{ord(value[at]):04x}, character {at + 1}), which is not text"
        ) from None
    return value


def _parquet_column(path: Path, column: str, digest: hashlib._Hash | None) -> Iterator[str]:
    """The `column` of each row of a Parquet file, read a row group at a time (`pyarrow`)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise EncodeError("reading Parquet files needs pyarrow: pip install 'lagdsl[parquet]'") from None
    for _ in blocks(path, digest):  # the file's bytes for the fingerprint, as for other files
        pass
    try:
        table = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise EncodeError(f"`{path}` is not a Parquet file ({str(error).splitlines()[0]})") from None
    names = table.schema_arrow.names
    if column not in names:
        found = ", ".join(f"`{n}`" for n in names[:6]) or "none"
        raise EncodeError(f"`{path}` has no column `{column}` (its columns: {found}): set `column=` to the text's")
    kind = table.schema_arrow.field(column).type
    held = kind.value_type if pa.types.is_dictionary(kind) else kind  # dictionary-encoded text is text
    if not (pa.types.is_string(held) or pa.types.is_large_string(held) or pa.types.is_string_view(held)):
        raise EncodeError(f"`{path}`: column `{column}` holds {kind}, not text")
    row = 0
    try:
        for batch in table.iter_batches(batch_size=PARQUET_ROWS, columns=[column]):
            for value in batch.column(0).to_pylist():
                row += 1
                if value is None:
                    raise EncodeError(f"`{path}`: row {row}'s `{column}` is null: fill or drop it")
                yield value
    except (pa.ArrowException, OSError) as error:
        raise EncodeError(f"`{path}` cannot be read past row {row} ({str(error).splitlines()[0]})") from None
