"""`metrics.jsonl`: one JSON object per line, flushed as it is written.

Events: `stage`, `step`, `grow`, `probe`, `select`, `eval`, `checkpoint`, `end` (the README lists
their fields). Fields that measure time (`elapsed`, `tokens_per_s`) differ between runs; every
other field is determined by the schedule and the seed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

TIMING_FIELDS = frozenset({"elapsed", "tokens_per_s"})


def _clean(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class Metrics:
    def __init__(self, path: Path, keep_lines: int | None = None) -> None:
        self.path = path
        if keep_lines is not None and path.exists():  # a resumed run: drop what came after its checkpoint
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)[:keep_lines]
            path.write_text("".join(lines), encoding="utf-8")
        self.lines = sum(1 for _ in path.open(encoding="utf-8")) if path.exists() else 0
        self.stream = path.open("a", encoding="utf-8")

    def write(self, event: str, **fields: object) -> None:
        record = {"event": event, **{k: _clean(v) for k, v in fields.items()}}
        self.stream.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.stream.flush()
        self.lines += 1

    def close(self) -> None:
        self.stream.close()


def read(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def without_timing(records: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]
