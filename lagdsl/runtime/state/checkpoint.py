"""Checkpoints: written atomically, checked on load, never lost.

A checkpoint holds a `TrainState`'s state dict: what a resumed run needs to continue exactly (the
model's shape and weights, the optimizer's state, the program counter, the mainline step, the FLOP
counters, how many lines of `metrics.jsonl` belong to it). Nothing else needs saving: every random
draw is seeded from (seed, step, purpose).

The file is what `torch.save` writes, followed by one line, `lagdsl-sha256 <hex digest of what
precedes it>`, so that a damaged file (truncated, garbled, a flipped bit) is recognised before it is
loaded; `torch.load` reads the file as it is (it ignores what follows its archive). It is written to
a temporary file, flushed and fsynced, then renamed over its name, and the directory is fsynced: a
crash at any point leaves either the old files or the new one, never half of one. Loading uses
`weights_only=True` (no pickled code runs).

Runs of several ranks write folders instead (`step-....dcp/`, see `lagdsl.runtime.state.dcp`); every
function here takes both, and loading either gives the same state dict.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import torch

if TYPE_CHECKING:
    from lagdsl.runtime.state.dcp import Room

PREFIX = "step-"
TRAILER = b"\nlagdsl-sha256 "  # followed by 64 hex digits and a newline
_TRAILER_SIZE = len(TRAILER) + 64 + 1
_CHUNK = 1 << 20


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says why in a few words."""


class _Hashing:
    """A binary stream that hashes what it writes."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream, self.digest = stream, hashlib.sha256()
        #: the error a write met (torch.save may report it as a RuntimeError of its own)
        self.failed: OSError | None = None

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        try:
            return self.stream.write(data)
        except OSError as error:
            self.failed = error
            raise

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as error:
            self.failed = error
            raise


def write_atomic(payload: dict[str, Any], path: Path) -> None:
    """`payload` saved to `path` with its checksum, atomically. On any error (a full disk, say)
    the temporary file is removed and `path` is as it was; the error is raised."""
    from lagdsl.artifacts.atomic import replaced

    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced(path) as stream:  # a fresh temporary name beside it (`.NAME.XXXX.tmp`), renamed
        hashing = _Hashing(stream)
        try:
            torch.save(payload, cast(BinaryIO, hashing))  # torch.save needs only `write` and `flush`
        except RuntimeError as error:  # its writer's word for a write that failed ("unexpected pos ...")
            if hashing.failed is not None:
                raise hashing.failed from None
            raise OSError(f"the file could not be written ({str(error).splitlines()[0]}): is the disk full?") from None
        stream.write(TRAILER + hashing.digest.hexdigest().encode() + b"\n")
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def verify(path: Path) -> None:
    """Raise `CheckpointError` unless `path` holds a checkpoint whose checksum matches."""
    if path.is_dir():
        from lagdsl.runtime.state import dcp

        try:
            dcp.verify(path)
        except dcp.ShardedError as error:
            raise CheckpointError(str(error)) from None
        return
    try:
        size = path.stat().st_size
        if size < _TRAILER_SIZE:
            raise CheckpointError("empty" if size == 0 else f"cut short ({size} bytes)")
        digest = hashlib.sha256()
        with open(path, "rb") as stream:
            left = size - _TRAILER_SIZE
            while left:
                chunk = stream.read(min(_CHUNK, left))
                if not chunk:
                    raise CheckpointError("cut short while being read")
                digest.update(chunk)
                left -= len(chunk)
            trailer = stream.read()
    except OSError as error:
        raise CheckpointError(f"cannot be read: {error.strerror or error}") from None
    if not trailer.startswith(TRAILER) or len(trailer) != _TRAILER_SIZE:
        raise CheckpointError("no checksum at its end: cut short, or not written by lagdsl")
    if trailer[len(TRAILER) : -1].decode("ascii", "replace") != digest.hexdigest():
        raise CheckpointError("its checksum does not match: the file is damaged")


def load(path: Path, room: Room | None = None) -> dict[str, Any]:
    """A checkpoint's payload, after checking its checksum (`CheckpointError` when damaged). A
    sharded one is read by every rank together (a collective under several ranks), into `room`
    where given (`lagdsl.runtime.state.dcp.Room`)."""
    if path.is_dir():
        from lagdsl.runtime.state import dcp

        try:
            return dcp.load(path, room)
        except dcp.ShardedError as error:
            raise CheckpointError(str(error)) from None
    verify(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a file that passed its checksum but not torch: say so, never crash
        raise CheckpointError(f"cannot be loaded: {error}") from None
    if not isinstance(payload, dict):
        raise CheckpointError("does not hold a training state")
    return payload


def checkpoint_path(folder: Path, step: int, pc: int, sharded: bool = False) -> Path:
    return folder / f"{PREFIX}{step:09d}-{pc:06d}{'.dcp' if sharded else '.pt'}"


def list_checkpoints(folder: Path) -> list[Path]:
    """The checkpoints in `folder` (files of one process, folders of several ranks), oldest first.
    A folder set aside while the same step was saved again (`.NAME.XXXXXXXX.old`), whose
    replacement never arrived (a crash between the two renames), is put back first."""
    for aside in folder.glob(f".{PREFIX}*.dcp.*.old"):
        original = aside.with_name(aside.name[1:].rsplit(".", 2)[0])
        if original.suffix == ".dcp" and not original.exists() and not aside.is_symlink():
            with contextlib.suppress(OSError):
                os.replace(aside, original)
    return sorted(p for p in folder.glob(f"{PREFIX}*") if p.suffix in (".pt", ".dcp"))


def newest_intact(folder: Path) -> Path | None:
    """The newest checkpoint whose checksum matches (none: None)."""
    for path in reversed(list_checkpoints(folder)):
        try:
            verify(path)
        except CheckpointError:
            continue
        return path
    return None


def intact_newest_first(folder: Path) -> Iterator[tuple[Path, dict[str, Any] | None, str]]:
    """Each checkpoint, newest first, with its payload, or None and why it cannot be used."""
    for path in reversed(list_checkpoints(folder)):
        try:
            yield path, load(path), ""
        except CheckpointError as error:
            yield path, None, str(error)


def prune(folder: Path, keep: int, newest: Path) -> None:
    """Delete all but the newest `keep` checkpoints; never `newest` (the one just written, which is
    intact), whatever the names of the others."""
    for old in list_checkpoints(folder)[:-keep]:
        if old != newest:
            _remove(old)
    for stale in folder.glob(f".{PREFIX}*.tmp"):  # a write cut short by a crash
        _remove(stale)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
