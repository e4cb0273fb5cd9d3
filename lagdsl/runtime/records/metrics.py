"""`metrics.jsonl`: one event a line (`lagdsl.artifacts` defines them), flushed as it is written.

Fields that measure time (`elapsed`) differ between runs; every other field is determined by the
schedule and the seed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from lagdsl.artifacts import TIMING_FIELDS, Artifact, event_line


class LogFailed(Exception):
    """Rank 0's event log or one of its listeners (a tracker) failed; every rank raises it
    together, with rank 0's message (one line)."""


class Metrics:
    """The event log of a run, appended to line by line.

    With `keep_lines` (a resumed run) the file is cut to that many lines first: what came after the
    checkpoint, a line torn by a crash, bytes that are not UTF-8. `repaired` then says what was cut.
    A checkpoint counts its own event among its lines (`checkpoint`: its path as the event gives
    it); a run killed after writing the checkpoint and before its event has none there, so the
    line in its place, written by a later attempt, is cut too.
    """

    path: Path | None
    stream: TextIO | None
    #: under several ranks, rank 0's log keeps its first failure (a full disk, a tracker's error)
    #: instead of raising it, and the engine shares it with every rank at the next step's
    #: all-reduce, so that all of them stop together with its message (one process: raised at once)
    defer: bool = False
    failure: str | None = None

    def __init__(self, path: Path, keep_lines: int | None = None, checkpoint: str | None = None) -> None:
        self.path = path
        self.repaired: str | None = None
        self.listeners: list[Callable[[Artifact], None]] = []  # told of every event once it is written
        if keep_lines is not None and path.exists():
            data = path.read_bytes()
            lines = data.splitlines(keepends=True)
            kept = lines[:keep_lines]
            # the checkpoint's event is its last line; where another line stands there, a later
            # attempt wrote it (the event never was): it goes. A log that ends before that place
            # was killed before the event, and every line it has belongs to the checkpoint
            if checkpoint is not None and len(kept) == keep_lines > 0 and not _is_event_of(kept[-1], checkpoint):
                kept = kept[:-1]
            dropped = len(lines) - len(kept)
            torn = bool(kept) and not kept[-1].endswith(b"\n")  # the checkpoint's own lines end cleanly
            if torn:
                kept = kept[:-1]
            if dropped or torn:
                path.write_bytes(b"".join(kept))
                cut = "a torn line" if torn and not dropped else f"{dropped + torn} later line(s)"
                self.repaired = f"cut to the {len(kept)} lines of its checkpoint ({cut} dropped)"
            self.lines = len(kept)
        else:
            self.lines = path.read_bytes().count(b"\n") if path.exists() else 0
        self.stream = path.open("a", encoding="utf-8")

    @classmethod
    def muted(cls, lines: int) -> Metrics:
        """A log that writes nothing but counts its lines: what ranks other than 0 keep, so that
        their checkpoints agree with rank 0's."""
        muted = cls.__new__(cls)
        muted.path, muted.repaired, muted.listeners, muted.lines, muted.stream = None, None, [], lines, None
        return muted

    def write(self, event: Artifact) -> None:
        if self.stream is not None and self.failure is None:
            try:
                self.stream.write(event_line(event) + "\n")
                self.stream.flush()
            except OSError as error:
                if not self.defer:
                    raise
                self.failure = f"cannot write `{self.path}`: {error.strerror or error}"
        self.lines += 1
        for listener in self.listeners:
            try:
                listener(event)
            except Exception as error:
                if not self.defer:
                    raise
                if self.failure is None:
                    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                    self.failure = f"{getattr(listener, 'what', 'a listener of the event log')}: {reason}"

    def close(self) -> None:
        if self.stream is not None:
            try:
                self.stream.close()
            except OSError:  # what the failed write left in the buffer: the failure is told already
                if self.failure is None:
                    raise


def _is_event_of(line: bytes, checkpoint: str) -> bool:
    """Whether `line` is the event of the checkpoint at `checkpoint`."""
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("event") == "checkpoint" and record.get("path") == checkpoint


def read(path: Path) -> list[dict[str, object]]:
    """The events as plain dicts, as written (tests compare runs with them)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def without_timing(records: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]
