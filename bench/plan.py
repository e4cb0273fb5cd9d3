"""Benchmark: `lagdsl plan --format json` on generated LAG schedules of growing size.

Each schedule has one growth per stage with five candidates (bench/validate.py's generator).
Measures, interleaved so that drift in the machine's speed hits every size alike:

1. whole-process wall time of `lagdsl plan FILE --format json` (medians; target: 1,000 stages
   <= 2 s);
2. in-process time to build the plan and encode it as JSON, per stage (target: flat as the
   schedule grows: the cost is linear in stages).

Writes `bench/plan.json` and prints a markdown table; `--update-docs` also puts the table in the
docs/benchmarks.md between the `bench:plan` markers.

    python bench/plan.py [--runs 7] [--update-docs]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import cores, publish, wall  # noqa: E402
from validate import generated  # noqa: E402

SIZES = [250, 500, 1000, 2000]


def process_times(runs: int, folder: Path) -> dict[int, float]:
    commands = {}
    for n in SIZES:
        path = folder / f"generated-{n}.grow"
        path.write_text(generated(n))
        commands[n] = [sys.executable, "-m", "lagdsl", "plan", str(path), "--format", "json"]
        wall(commands[n])  # warm caches
    times: dict[int, list[float]] = {n: [] for n in SIZES}
    for _ in range(runs):
        for n in SIZES:
            times[n].append(wall(commands[n]))
    return {n: statistics.median(t) for n, t in times.items()}


def in_process(repeats: int) -> dict[int, float]:
    from lagdsl.lang import check_text
    from lagdsl.plan import build_plan, check_invariants
    from lagdsl.plan.render import to_json

    best = {}
    for n in SIZES:
        schedule = check_text(generated(n)).schedule
        assert schedule is not None
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            plan = build_plan(schedule)
            to_json(plan)
            times.append(time.perf_counter() - start)
        assert check_invariants(plan) == [] and len(plan.graph) > 12 * (n - 1)
        best[n] = min(times)
    return best


def table(results: dict[str, object]) -> str:
    lines = [
        f"Measured on {results['machine']} with Python {results['python']} (`python bench/plan.py`).",
        "",
        "| stages (5 candidates each) | plan nodes | `lagdsl plan --format json`, whole process "
        "| build + JSON in process | target |",
        "|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        target = "<= 2 s" if row["stages"] == 1000 else ""
        lines.append(
            f"| {row['stages']:,} | {row['nodes']:,} | {row['process_s'] * 1000:.0f} ms "
            f"| {row['in_process_s'] * 1000:.0f} ms ({row['in_process_ms_per_stage']:.2f} ms/stage) | {target} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    from lagdsl.lang import check_text
    from lagdsl.plan import build_plan

    with tempfile.TemporaryDirectory() as tmp:
        process = process_times(args.runs, Path(tmp))
    inside = in_process(args.repeats)
    rows = []
    for n in SIZES:
        nodes = len(build_plan(check_text(generated(n)).schedule).graph)
        rows.append(
            {
                "stages": n,
                "nodes": nodes,
                "process_s": process[n],
                "in_process_s": inside[n],
                "in_process_ms_per_stage": 1000 * inside[n] / n,
            }
        )
    results = {
        "machine": f"{platform.machine()}, {cores()} cores",
        "python": platform.python_version(),
        "runs": args.runs,
        "rows": rows,
    }
    publish("plan", results, table(results), args.update_docs)


if __name__ == "__main__":
    main()
