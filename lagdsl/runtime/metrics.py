"""`metrics.jsonl`: one event a line (`lagdsl.artifacts` defines them), flushed as it is written.

Fields that measure time (`elapsed`) differ between runs; every other field is determined by the
schedule and the seed.
"""

from __future__ import annotations

import json
from pathlib import Path

from lagdsl.artifacts import TIMING_FIELDS, Artifact, event_line


class Metrics:
    """The event log of a run, appended to line by line."""

    def __init__(self, path: Path, keep_lines: int | None = None) -> None:
        self.path = path
        if keep_lines is not None and path.exists():  # a resumed run: drop what came after its checkpoint
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)[:keep_lines]
            path.write_text("".join(lines), encoding="utf-8")
        self.lines = sum(1 for _ in path.open(encoding="utf-8")) if path.exists() else 0
        self.stream = path.open("a", encoding="utf-8")

    def write(self, event: Artifact) -> None:
        self.stream.write(event_line(event) + "\n")
        self.stream.flush()
        self.lines += 1

    def close(self) -> None:
        self.stream.close()


def read(path: Path) -> list[dict[str, object]]:
    """The events as plain dicts, as written (tests compare runs with them)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def without_timing(records: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]
