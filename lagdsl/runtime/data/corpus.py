"""A corpus of tokens, split into train and validation.

- `stdlib()`: the running Python's standard-library `.py` files (site-packages excluded), sorted
  by path, read as bytes and joined with a newline: vocabulary 256, no download.
- `text("glob")`: text files matching the glob (relative to the schedule's folder), sorted, as
  bytes; with `tokenizer=`, as that tokenizer's tokens.
- `jsonl("glob", field="text")`: the `field` of each line of JSON Lines files, as bytes (documents
  joined with a newline) or, with `tokenizer=`, as tokens.
- `parquet("glob", column="text")`: the `column` of each row of Parquet files, likewise.
- `tokens("train.bin", val="val.bin", dtype=uint16)`: memory-mapped token arrays in nanoGPT's
  format, each a file, a glob or a list of them (shards read in order as one array, never joined
  in memory); without `val`, the last 5% of train is held out.

Every corpus but `tokens(...)` is read once as a stream into the token cache (`lagdsl.text.encode`:
bytes or a tokenizer's tokens, written a block at a time) and memory-mapped from there, so a
process's memory is bounded by a read block, not by the corpus, and the ranks of a machine share
one copy in the page cache. How batches are drawn from it: `lagdsl.runtime.data.batches`.
"""

from __future__ import annotations

import glob as globbing
import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lagdsl.lang.schedule import DataSpec, JsonlData, ParquetData, StdlibData, TextData, TokenFiles, TokensData
from lagdsl.text import encode
from lagdsl.text import tokenizer as tok
from lagdsl.text.globs import matching
from lagdsl.text.reading import readable_sources

if TYPE_CHECKING:
    from tokenizers import Tokenizer


class DataError(Exception):
    """Data that cannot be used: missing, empty or too short. The message is one line for the user."""


class Joined:
    """Token files read as one array without joining them: a slice is a view of the files it
    spans, read (copied) only when a window turns it into an array (`np.asarray`)."""

    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = [part for part in parts if len(part)]
        self.starts = np.cumsum([0] + [len(part) for part in self.parts])
        self.dtype = parts[0].dtype if parts else np.dtype(np.uint16)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, key: slice) -> Joined:
        start, stop, step = key.indices(len(self))
        assert step == 1, "token files are read in windows"
        pieces = []
        for part, first in zip(self.parts, self.starts[:-1], strict=True):
            a, b = max(start - first, 0), min(stop - first, len(part))
            if a < b:
                pieces.append(part[a:b])
        return Joined(pieces)

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        whole = np.concatenate(self.parts) if self.parts else np.zeros(0, self.dtype)
        return whole if dtype is None else whole.astype(dtype)

    def max(self, initial: int = 0) -> int:
        return max((int(part.max(initial=initial)) for part in self.parts), default=initial)


#: what a corpus's tokens are: one array (a memory map), or token files read as one
Tokens = np.ndarray | Joined


@dataclass(frozen=True)
class Corpus:
    train: Tokens
    val: Tokens
    vocab: int
    fingerprint: str  # SHA-256 of what was read
    description: str
    #: fingerprints earlier versions gave the same data (a run they started resumes on it)
    earlier: tuple[str, ...] = ()

    def check(self, context: int) -> None:
        for name, part in (("training", self.train), ("validation", self.val)):
            if len(part) < context + 2:
                raise DataError(
                    f"the {name} data has {len(part):,} tokens, fewer than one window of "
                    f"{context + 1} (context + 1): use more data or a shorter context"
                )


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and "dist-packages" not in p.parts)


def _split(tokens: np.ndarray, val: float, vocab: int, fingerprint: str, description: str) -> Corpus:
    if len(tokens) == 0:
        raise DataError(f"{description.split(':')[0]} is empty")
    split = int(len(tokens) * (1 - val))
    return Corpus(tokens[:split], tokens[split:], vocab, fingerprint, description)


def _path(name: str, base: Path) -> Path:
    return Path(name) if Path(name).is_absolute() else base / name


def _tokenizer(name: str, base: Path) -> Tokenizer:
    try:
        return tok.load(_path(name, base))
    except tok.TokenizerError as error:
        raise DataError(str(error)) from None


def _cached(
    files: list[Path],
    spec: StdlibData | TextData | JsonlData | ParquetData,
    what: str,
    base: Path,
    progress: bool,
    kind: encode.Kind = "text",
) -> Corpus:
    """The files as bytes, or as tokens of the spec's tokenizer: read once into the token cache
    (streamed) and memory-mapped from there."""
    if not files:
        raise DataError(f"no files found for {what}")
    tokenizer = _tokenizer(spec.tokenizer, base) if spec.tokenizer is not None else None
    field = spec.field if isinstance(spec, JsonlData) else spec.column if isinstance(spec, ParquetData) else None
    if isinstance(spec, (JsonlData, ParquetData)):
        kind = spec.kind
    try:
        encoded = encode.encode_corpus(files, tokenizer, field, progress, kind)
    except encode.EncodeError as error:
        raise DataError(str(error)) from None
    if tokenizer is None:
        description = f"{what}: {len(files):,} files, {len(encoded.tokens):,} bytes"
    else:
        description = (
            f"{what}, tokenizer {spec.tokenizer}: {len(files):,} files, {encoded.documents:,} documents, "
            f"{len(encoded.tokens):,} tokens"
        )
    return _split(encoded.tokens, spec.val, encoded.vocab, encoded.fingerprint, description)


def _files(spec: TextData | JsonlData | ParquetData, base: Path) -> tuple[list[Path], str]:
    what = f'{spec.kind}("{spec.glob}")'
    pattern = spec.glob if Path(spec.glob).is_absolute() else str(base / spec.glob)
    files = matching(pattern)
    if not files:
        raise DataError(f"no files match `{what}` (looked in {base})")
    return files, what


def load_corpus(spec: DataSpec, base: Path, progress: bool = True) -> Corpus:
    """Read the schedule's data; relative paths are taken from `base` (the schedule's folder).
    `progress`: show a progress bar on stderr while tokenizing."""
    if isinstance(spec, StdlibData):
        if spec.tokenizer is None:  # bytes: every file as it is
            return _cached(stdlib_files(), spec, "the standard library's source", base, progress)
        # text for a tokenizer: each file in the encoding it declares; a few test files of the
        # standard library hold undecodable text on purpose, and are left out (and counted)
        files, left = readable_sources(stdlib_files())
        what = "the standard library's source" + (
            f" ({len(left):,} file{'s' * (len(left) != 1)} left out: not text in the encoding declared)" if left else ""
        )
        return _cached(files, spec, what, base, progress, kind="python")
    if isinstance(spec, (TextData, JsonlData, ParquetData)):
        files, what = _files(spec, base)
        return _cached(files, spec, what, base, progress)
    assert isinstance(spec, TokensData)
    dtype = np.dtype(spec.dtype)
    train = _token_files(spec.train, dtype, base)
    if spec.val is not None:
        val = _token_files(spec.val, dtype, base)
    else:
        split = int(len(train) * 0.95)
        train, val = train[:split], train[split:]
    digest, before = hashlib.sha256(), hashlib.sha256()
    for part in (train, val):
        for piece in part.parts if isinstance(part, Joined) else [part]:
            digest.update(_sampled(piece))
        digest.update(str(len(part)).encode())
        if not isinstance(part, Joined):
            # what earlier versions hashed (the first 2^20 tokens), so that their runs still resume
            before.update(np.ascontiguousarray(part[: 1 << 20]).tobytes())
            before.update(str(len(part)).encode())
    vocab = int(max(train.max(initial=0), val.max(initial=0))) + 1
    if spec.tokenizer is not None:
        size = tok.vocab_size(_tokenizer(spec.tokenizer, base))
        if vocab > size:
            raise DataError(f"the tokens go up to id {vocab - 1}, beyond the tokenizer's {size}: is it the one?")
        vocab = size
    shards = "" if not isinstance(train, Joined) else f" ({len(train.parts):,} train files)"
    description = f"tokens: {len(train):,} train, {len(val):,} validation{shards}"
    earlier = () if isinstance(train, Joined) or isinstance(val, Joined) else (before.hexdigest(),)
    return Corpus(train, val, vocab, digest.hexdigest(), description, earlier=earlier)


def _token_files(names: TokenFiles, dtype: np.dtype, base: Path) -> Tokens:
    """The token file, or the files a glob or a list names (in their order; a glob's sorted), as
    one array: a memory map of one file, a `Joined` of several."""
    paths: list[Path] = []
    for name in (names,) if isinstance(names, str) else names:
        path = _path(name, base)
        if globbing.has_magic(name):
            found = matching(str(path))
            if not found:
                raise DataError(f"no token files match `{name}` (looked in {base})")
            paths += found
        else:
            paths.append(path)
    arrays = [_open_tokens(path, dtype) for path in paths]
    return arrays[0] if isinstance(names, str) and len(arrays) == 1 else Joined(arrays)


def _open_tokens(path: Path, dtype: np.dtype) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"token file `{path}` does not exist")
    size = path.stat().st_size
    if size < dtype.itemsize:
        raise DataError(f"token file `{path}` is empty")
    if size % dtype.itemsize:
        raise DataError(
            f"token file `{path}` has {size:,} bytes, not a whole number of {dtype.name} tokens "
            f"({dtype.itemsize} bytes each): is `dtype` right, or is the file cut short?"
        )
    try:
        return np.memmap(path, dtype=dtype, mode="r")
    except OSError as error:
        raise DataError(f"token file `{path}` cannot be read: {error.strerror or error}") from None


#: what a token file's fingerprint reads: its first and last MiB and this many blocks between
SAMPLED_BLOCKS, BLOCK_BYTES, END_BYTES = 1024, 4096, 1 << 20


def _sampled(tokens: np.ndarray) -> bytes:
    """The bytes a token file's fingerprint hashes: its first and last MiB and 1,024 blocks of 4 KiB
    spread evenly between (about 6 MiB, whatever the file's size). An edit near either end or in
    a sampled block changes it; the length is hashed beside it."""
    data = tokens.view(np.uint8) if tokens.flags.c_contiguous else np.ascontiguousarray(tokens).view(np.uint8)
    if len(data) <= 2 * END_BYTES + SAMPLED_BLOCKS * BLOCK_BYTES:
        return data.tobytes()
    starts = np.linspace(END_BYTES, len(data) - END_BYTES - BLOCK_BYTES, SAMPLED_BLOCKS).astype(np.int64)
    blocks = [data[:END_BYTES], *(data[int(s) : int(s) + BLOCK_BYTES] for s in starts), data[-END_BYTES:]]
    return b"".join(block.tobytes() for block in blocks)
