"""What the benchmark scripts share: timing a command, the machine's cores, the tables in docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wall(cmd: list[str]) -> float:
    """Seconds a command takes, whole process, its output discarded."""
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - start


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def update_docs(marker: str, text: str) -> None:
    """Put `text` in docs/benchmarks.md between `<!-- bench:MARKER -->` and `<!-- /bench:MARKER -->`."""
    page = ROOT / "docs" / "benchmarks.md"
    content = page.read_text()
    start, end = f"<!-- bench:{marker} -->", f"<!-- /bench:{marker} -->"
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    page.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def publish(name: str, result: object, table: str, update: bool, path: Path | None = None) -> None:
    """A benchmark's result written beside it (`bench/NAME.json`, or `path`), its table printed,
    and with `update` put into docs/benchmarks.md between its markers."""
    (path or ROOT / "bench" / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(table)
    if update:
        update_docs(name, table)
