"""What the benchmark scripts share: timing a command, the machine's cores, the tables in docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def wall(cmd: list[str]) -> float:
    """Seconds a command takes, whole process, its output discarded."""
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - start


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class NestedPeaks:
    """Each phase's peak of a measure read as the peak since it was last reset (`read`, `reset`:
    a process's VmHWM, CUDA's allocator), the phases nested: a phase's peak takes in its nested
    phases', whose resets would otherwise lose what came before them."""

    def __init__(self, read: Callable[[], int], reset: Callable[[], None]) -> None:
        self.read, self.reset = read, reset
        self.open: list[int] = []  # the peak so far of each phase entered and not yet left

    def enter(self) -> None:
        if self.open:
            self.open[-1] = max(self.open[-1], self.read())
        self.open.append(0)
        self.reset()

    def leave(self) -> int:
        """The peak of the phase left, its nested phases' included."""
        top = max(self.open.pop(), self.read())
        if self.open:
            self.open[-1] = max(self.open[-1], top)
        self.reset()
        return top


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


# -- a lag study's rows (`lagdsl study`), as the evidence benchmarks report them


def lag_rows(study: Any) -> list[dict[str, Any]]:
    """Per lag of a study (`lagdsl.artifacts.Study`): rho, its interval, the regret, its interval,
    the paired test against lag 0 and the picks within 1%, as plain data."""
    rows = []
    for row in study.summary.val:
        rows.append({
            "lag": row.lag,
            "rho": row.spearman.model_dump(),
            "rho_ci": row.spearman_ci.model_dump() if row.spearman_ci else None,
            "regret": row.regret.model_dump(),
            "regret_ci": row.regret_ci.model_dump() if row.regret_ci else None,
            "above_lag0": row.above_lag0.model_dump() if row.above_lag0 else None,
            "picks_within_1pct": row.picks_within_1pct,
        })  # fmt: skip
    return rows


def spread(d: dict[str, Any], digits: int = 2) -> str:
    """`mean ± sd` over seeds (the mean alone for one seed)."""
    if not d["n"] or d["mean"] is None:
        return "n/a"
    return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}" if d["n"] > 1 else f"{d['mean']:.{digits}f}"


def interval(d: dict[str, Any] | None, digits: int = 2) -> str:
    """`[low, high]`, or n/a."""
    if not d or d.get("low") is None:
        return "n/a"
    return f"[{d['low']:.{digits}f}, {d['high']:.{digits}f}]"


def lag_cells(row: dict[str, Any]) -> list[str]:
    """A lag row's cells after the lag: rho, its interval, rho minus rho at lag 0 with its
    interval, p, the regret and its interval."""
    test = row["above_lag0"]
    diff = f"{test['mean']:+.2f} {interval(test)}" if test and test.get("mean") is not None else ""
    p = f"{test['p_value']:.3f}" if test and test.get("p_value") is not None else ""
    return [spread(row["rho"]), interval(row["rho_ci"]), diff, p, spread(row["regret"], 4),
            interval(row["regret_ci"], 4)]  # fmt: skip


# -- the evidence benchmarks (a pipeline of `lagdsl` commands at a size, then its tables)


def measured(
    measure: Callable[[dict[str, Any], Path, Callable[[str], None]], None],
    analyse: Callable[[dict[str, Any], Path], dict[str, Any]],
    size: dict[str, Any],
    work: Path,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """An evidence benchmark at `size` from scratch under `work`: measured (the seconds it took in
    `seconds.txt`), then analysed."""
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.perf_counter()
    measure(size, work, say)
    (work / "seconds.txt").write_text(f"{round(time.perf_counter() - started)}\n")
    return analyse(size, work)


def evidence_main(
    name: str,
    doc: str,
    sizes: dict[str, dict[str, Any]],
    run: Callable[..., dict[str, Any]],
    analyse: Callable[[dict[str, Any], Path], dict[str, Any]],
    markdown: Callable[[dict[str, Any]], str],
) -> None:
    """An evidence benchmark's command line: `--size cpu|toy` (its work folder
    `bench/out/NAME/SIZE`), `--reuse` (analyse the last measurement again), `--update-docs` (the
    CPU size's tables into docs/benchmarks.md; a toy run leaves the published figures alone)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--size", choices=["cpu", "toy"], default="cpu")
    parser.add_argument("--update-docs", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="analyse the last measurement again")
    args = parser.parse_args()
    size, work = sizes[args.size], ROOT / "bench" / "out" / name / args.size
    result = analyse(size, work) if args.reuse else run(size, work, say=lambda line: print(line, flush=True))
    path = None if args.size == "cpu" else work / f"{name}.json"
    publish(name, result, markdown(result), args.update_docs and args.size == "cpu", path)
