"""Corpora to tokens: read once as a stream, tokenized in parallel, cached as a memory-mapped file.

A corpus is a list of files of one kind: text files (each a document; one over `PIECE` characters
is cut into pieces at line ends, so that every core has work), JSON Lines files (each line an
object whose `field` is a document) or Parquet files (each row's `field` column a document, read a
row group at a time; `pyarrow`). Files are read in blocks, a line or a row group at a time: memory
is bounded by a piece and a batch, never by a file or the corpus. Documents are tokenized in
batches by `tokenizers` (`encode_batch_fast`, which runs across all cores) and joined with the
tokenizer's end-of-text token (its encoding of a newline when it has none). Without a tokenizer
the corpus is bytes (token i is byte i): text files joined with a newline, as they are (any
bytes), or the documents of JSON Lines and Parquet files as UTF-8 joined with a newline.

The cache (`cache_root()/tokens/<key>/`: `tokens.bin` and `meta.json`) is keyed by the tokenizer's
contents (or "bytes"), the kind and field, and each file's path, size, modification and change
times and inode, so a second run, a resume, or the other ranks of a machine open the tokens at
once (memory-mapped: the page cache holds them once for all), and a file edited since is read
again. `meta.json` holds the fingerprint of what was read (the files' names and bytes, and the
tokenizer), which runs record. An entry is written into a temporary folder and renamed: it is
complete or absent.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from lagdsl.text.reading import EncodeError, Kind, blocks, documents, kind_of, pieces
from lagdsl.text.tokenizer import special_ids, vocab_size

__all__ = ["EncodeError", "Encoded", "Kind", "documents", "encode_corpus", "kind_of", "pieces", "tokenize_to"]

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

BATCH_BYTES = 4 << 20  # text per `encode_batch` call (its encodings take some 30 times its size)
CACHE_VERSION = 1


#: what `flock` raises where the file system has no such locks
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def cache_root() -> Path:
    """`$LAGDSL_CACHE`, else `$XDG_CACHE_HOME/lagdsl`, else `~/.cache/lagdsl`."""
    if os.environ.get("LAGDSL_CACHE"):
        return Path(os.environ["LAGDSL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lagdsl"


def token_dtype(vocab: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab <= 1 << 16 else np.dtype(np.uint32)


@dataclass(frozen=True)
class Encoded:
    """A tokenized corpus: `tokens` (memory-mapped), what it was read from, and whether it came
    from the cache (`cached`) or was tokenized just now."""

    tokens: np.ndarray
    vocab: int
    fingerprint: str
    documents: int
    cached: bool


# -- tokenizing


def write_tokens(
    files: list[Path],
    tokenizer: Tokenizer,
    field: str | None,
    stream: BinaryIO,
    on_bytes: Callable[[int, int, int], None] = lambda size, tokens, documents: None,
    kind: Kind | None = None,
) -> tuple[int, int, str]:
    """Tokenize `files` into `stream` (the vocabulary's dtype); (tokens, documents, fingerprint).
    `on_bytes(size, tokens, documents)` after each batch: its characters, tokens and documents ended."""
    from tokenizers import Tokenizer as _Tokenizer

    vocab = vocab_size(tokenizer)
    dtype = token_dtype(vocab)
    eos = special_ids(tokenizer)["eos_token_id"]
    separator = [eos] if eos is not None else tokenizer.encode("\n", add_special_tokens=False).ids
    digest = hashlib.sha256(tokenizer.to_str().encode())
    encode = getattr(_Tokenizer, "encode_batch_fast", _Tokenizer.encode_batch)
    count = docs = 0

    Batch = tuple[list[str], list[bool], int]  # pieces, whether each ends its document, characters

    def batches() -> Iterator[Batch]:
        batch: list[str] = []
        ends: list[bool] = []
        size = 0
        for piece, last in pieces(files, field, digest, kind):
            batch.append(piece)
            ends.append(last)
            size += len(piece)
            if size >= BATCH_BYTES:
                yield batch, ends, size
                batch, ends, size = [], [], 0
        if batch:
            yield batch, ends, size

    def write(encodings: list[Encoding], ends: list[bool], size: int) -> None:
        nonlocal count, docs
        ids = ((e.ids, separator) if last else (e.ids,) for e, last in zip(encodings, ends, strict=True))
        array = np.fromiter(itertools.chain.from_iterable(itertools.chain.from_iterable(ids)), dtype=dtype)
        stream.write(array.data)
        count, docs = count + len(array), docs + sum(ends)
        on_bytes(size, len(array), sum(ends))

    # a pipeline: `tokenizers` encodes a batch on every core (it lets go of the GIL) while this
    # thread reads the next one and writes the last one's ids
    with ThreadPoolExecutor(1) as pool:
        pending: tuple[Future[list[Encoding]], list[bool], int] | None = None
        for batch, ends, size in batches():
            submitted = pool.submit(encode, tokenizer, batch, add_special_tokens=False)
            if pending is not None:
                write(pending[0].result(), pending[1], pending[2])
            pending = (submitted, ends, size)
        if pending is not None:
            write(pending[0].result(), pending[1], pending[2])
    return count, docs, digest.hexdigest()


def write_bytes(
    files: list[Path],
    field: str | None,
    stream: BinaryIO,
    on_bytes: Callable[[int, int, int], None] = lambda size, tokens, documents: None,
    kind: Kind | None = None,
) -> tuple[int, int, str]:
    """The corpus as bytes into `stream`: text files as they are (any bytes), each followed by a
    newline but the last; or the documents of JSON Lines or Parquet files as UTF-8, joined the same
    way. (bytes, documents, fingerprint), read a block at a time."""
    kind = kind_of(field, kind)
    digest = hashlib.sha256() if kind in ("text", "python") else hashlib.sha256(f"{kind}\0{field}\0".encode())
    count = docs = 0
    if kind in ("text", "python"):  # a file's bytes, whatever its encoding
        for path in files:
            if docs:
                stream.write(b"\n")
                count += 1
            digest.update(path.name.encode() + b"\0")
            for block in blocks(path, digest):
                stream.write(block)
                count += len(block)
                on_bytes(len(block), len(block), 0)
            docs += 1
            on_bytes(0, 0, 1)
    else:
        for document in documents(files, field, digest, kind):
            data = (b"\n" if docs else b"") + document.encode()
            stream.write(data)
            count, docs = count + len(data), docs + 1
            on_bytes(len(data), len(data), 1)
    return count, docs, digest.hexdigest()


def _key(files: list[Path], tokenizer: Tokenizer | None, field: str | None, kind: Kind) -> str:
    # a text corpus's key is what it was before Parquet and bytes were cached, so entries stay valid
    digest = hashlib.sha256(f"lagdsl-tokens/{CACHE_VERSION}\0{field}\0".encode())
    if kind == "parquet":
        digest.update(b"parquet\0")
    digest.update(tokenizer.to_str().encode() if tokenizer is not None else b"bytes\0")
    for path in files:
        try:
            stat = path.stat()
        except OSError as error:
            raise EncodeError(f"cannot read `{path}`: {error.strerror or error}") from None
        # the change time too: an edit whose mtime was put back (`touch -r`, `rsync -t`) still changes it
        key = f"\0{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ctime_ns}\0{stat.st_ino}"
        digest.update(key.encode())
    return digest.hexdigest()[:32]


def encode_corpus(
    files: list[Path],
    tokenizer: Tokenizer | None,
    field: str | None = None,
    progress: bool = True,
    kind: Kind | None = None,
) -> Encoded:
    """`files` tokenized (`tokenizer` None: as bytes): from the cache when it holds them, else now
    (with a progress bar on stderr when `progress`), then cached."""
    kind = kind_of(field, kind)
    folder = cache_root() / "tokens" / _key(files, tokenizer, field, kind)
    vocab = vocab_size(tokenizer) if tokenizer is not None else BYTES
    cached = _open_cached(folder, vocab)
    if cached is not None:
        return cached
    with _locked(folder):  # one process tokenizes; the others (ranks of a run) wait, then read its tokens
        return _open_cached(folder, vocab) or _encode_into(folder, files, tokenizer, field, kind, progress)


#: the vocabulary of bytes
BYTES = 256


def _dtype(vocab: int, tokenizer: Tokenizer | None) -> np.dtype:
    return np.dtype(np.uint8) if tokenizer is None else token_dtype(vocab)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on `folder`'s entry among processes of this machine (none where the
    system has no `fcntl` or the file system no `flock`: then several processes may tokenize,
    each into its own temporary folder, and the first rename wins)."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        yield
        return
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        # opened without truncating, and never through a link planted under its name
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        handle = os.fdopen(os.open(folder.with_name(f".{folder.name}.lock"), flags, 0o644), "r+")
    except OSError as error:
        raise EncodeError(f"cannot write the token cache in `{folder.parent}`: {error.strerror or error}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as error:
            if error.errno not in _NO_FLOCK:
                reason = error.strerror or error
                raise EncodeError(f"cannot lock the token cache in `{folder.parent}`: {reason}") from None
            # a file system without file locks (some NFS and Lustre mounts): each process tokenizes
            # into its own temporary folder and the first rename wins, as without fcntl
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _encode_into(
    folder: Path, files: list[Path], tokenizer: Tokenizer | None, field: str | None, kind: Kind, progress: bool
) -> Encoded:
    """Tokenize into a new entry `folder` (under the entry's lock: an entry there is damaged)."""
    vocab = vocab_size(tokenizer) if tokenizer is not None else BYTES
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
    temporary = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        temporary.mkdir(parents=True)
        total = sum(p.stat().st_size for p in files)
        shown = _progress(total, progress and tokenizer is not None, len(files), tokenizer)
        with open(temporary / "tokens.bin", "wb") as stream, shown as on:
            if tokenizer is None:
                count, docs, fingerprint = write_bytes(files, field, stream, on, kind)
            else:
                count, docs, fingerprint = write_tokens(files, tokenizer, field, stream, on, kind)
        meta = {"version": CACHE_VERSION, "tokens": count, "documents": docs, "vocab": vocab,
                "dtype": _dtype(vocab, tokenizer).name, "fingerprint": fingerprint,
                "files": [str(p) for p in files]}  # fmt: skip
        (temporary / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        with contextlib.suppress(OSError):  # another process cached the same corpus first: as good
            temporary.rename(folder)
    except OSError as error:
        raise EncodeError(f"cannot write the token cache in `{folder.parent}`: {error.strerror or error}") from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    opened = _open_cached(folder, vocab)
    if opened is None:
        raise EncodeError(f"the token cache `{folder}` cannot be read back: remove it and run again")
    return Encoded(opened.tokens, vocab, opened.fingerprint, opened.documents, cached=False)


def _open_cached(folder: Path, vocab: int) -> Encoded | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("version") != CACHE_VERSION or meta["vocab"] != vocab:
            return None
        dtype = np.dtype(meta["dtype"])
        if (folder / "tokens.bin").stat().st_size != meta["tokens"] * dtype.itemsize:
            return None  # damaged: tokenize again
        tokens = np.memmap(folder / "tokens.bin", dtype=dtype, mode="r") if meta["tokens"] else np.zeros(0, dtype)
        return Encoded(tokens, vocab, meta["fingerprint"], meta["documents"], cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


class _progress:
    """What tokenizing says on stderr (nothing when `show` is false): first a line naming the files,
    their size and the token that ends each document; then a bar of bytes with the documents and
    tokens per second (in a terminal); last a line with the counts and the rate (anywhere, logs
    too), so that the first run on a new corpus never tokenizes in silence."""

    def __init__(self, total: int, show: bool, files: int = 0, tokenizer: Tokenizer | None = None) -> None:
        self.total, self.show, self.files, self.tokenizer = total, show, files, tokenizer
        self.tokens = self.documents = 0

    def __enter__(self) -> Callable[[int, int, int], None]:
        if not self.show:
            return lambda size, tokens, documents: None
        import time

        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self.console = Console(file=sys.stderr)
        print(f"tokenizing {self.files:,} files ({self.total / 1e6:,.1f} MB) once into the token cache; "
              f"{self._ending()}", file=sys.stderr, flush=True)  # fmt: skip
        self.started = time.perf_counter()
        self.bar = Progress(
            TextColumn("tokenizing"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TextColumn("{task.fields[documents]:,} documents, {task.fields[rate]:,.0f} tokens/s"),
            console=self.console, transient=True,
        )  # fmt: skip
        self.bar.start()
        task = self.bar.add_task("tokenizing", total=self.total, documents=0, rate=0.0)

        def advance(size: int, tokens: int, documents: int) -> None:
            self.tokens, self.documents = self.tokens + tokens, self.documents + documents
            rate = self.tokens / max(time.perf_counter() - self.started, 1e-9)
            self.bar.update(task, advance=size, documents=self.documents, rate=rate)

        return advance

    def _ending(self) -> str:
        if self.tokenizer is None:
            return "documents are joined with a newline"
        eos = special_ids(self.tokenizer)["eos_token_id"]
        if eos is None:
            return "each document ends with the tokenizer's encoding of a newline (it has no end-of-text token)"
        return f"each document ends with `{self.tokenizer.id_to_token(eos)}` (id {eos})"

    def __exit__(self, *exc: object) -> None:
        if not self.show:
            return
        import time

        self.bar.stop()
        if exc[0] is None:
            seconds = time.perf_counter() - self.started
            print(f"tokenized {self.documents:,} documents, {self.tokens:,} tokens in {seconds:,.1f} s "
                  f"({self.tokens / max(seconds, 1e-9):,.0f} tokens/s)", file=sys.stderr, flush=True)  # fmt: skip


#: the files `lagdsl tokenize` writes into its folder
TOKENIZE_FILES = frozenset({"train.bin", "val.bin", "tokenizer.json", "meta.json"})


def tokenize_to(
    files: list[Path],
    tokenizer: Tokenizer,
    field: str | None,
    out: Path,
    val: float,
    progress: bool = True,
    kind: Kind | None = None,
) -> dict[str, object]:
    """`lagdsl tokenize`: `out/train.bin` and `out/val.bin` (the last `val` share), a copy of the
    tokenizer and `meta.json`, for a schedule's `tokens(...)`; the meta data."""
    out.mkdir(parents=True, exist_ok=True)
    vocab = vocab_size(tokenizer)
    dtype = token_dtype(vocab)
    whole = out / "train.bin"
    try:
        total = sum(p.stat().st_size for p in files)
        with open(whole, "wb") as stream, _progress(total, progress, len(files), tokenizer) as advance:
            count, docs, fingerprint = write_tokens(files, tokenizer, field, stream, advance, kind)
        split = int(count * (1 - val))
        tokens = np.memmap(whole, dtype=dtype, mode="r") if count else np.zeros(0, dtype)
        np.asarray(tokens[split:]).tofile(out / "val.bin")
        del tokens
        os.truncate(whole, split * dtype.itemsize)
        tokenizer.save(str(out / "tokenizer.json"))
    except OSError as error:
        raise EncodeError(f"cannot write into `{out}`: {error.strerror or error}") from None
    meta: dict[str, object] = {"tokens": count, "train": split, "val": count - split, "documents": docs,
                               "vocab": vocab, "dtype": dtype.name, "fingerprint": fingerprint}  # fmt: skip
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta
