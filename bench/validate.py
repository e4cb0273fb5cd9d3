"""Benchmark: `lagdsl validate` against the import floor, and validation time against schedule size.

Both sides run in this one script, on this machine, interleaved so that drift in the machine's
speed hits both alike:

1. whole-process wall time of `lagdsl validate schedules/stack_lag.grow` against that of
   `python -c "import click, lark, pydantic, networkx"` (medians; target ratio <= 1.5);
2. in-process time to check generated schedules of 250 .. 2000 stages (target: 1,000 stages
   <= 1 s, and time per stage flat as the schedule grows).

Writes `bench/validate.json` and prints a markdown table; `--update-docs` also puts the table
in docs/benchmarks.md between the `bench:validate` markers.

    python bench/validate.py [--runs 15] [--update-docs]
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

HEADER = """\
schedule big
model gpt(context=128, width=128, heads=4, depth=2)
batch 32
optimizer adamw(lr=1e-3)
lr cosine(warmup=1%, min=1e-4)
total {total} steps
eval every 200 steps (batches=10)
pool depth_ops = [copy_top, copy_bottom, midas, random, identity]
stage base {{ train 100 steps }}
"""
STAGE = """\
stage s{i} {{
  grow depth by 1 {{
    candidates depth_ops
    probe 10 steps
    select lowest loss over last 2 steps
  }}
  train 100 steps
}}
"""


def generated(stages: int) -> str:
    """A LAG schedule of `stages` stages: one growth with five candidates in each but the first."""
    body = "".join(STAGE.format(i=i) for i in range(1, stages))
    return HEADER.format(total=100 * stages) + body


def process_times(runs: int) -> dict[str, object]:
    lagdsl = [sys.executable, "-m", "lagdsl", "validate", "schedules/stack_lag.grow"]
    floor = [sys.executable, "-c", "import click, lark, pydantic, networkx"]
    with tempfile.TemporaryDirectory() as tmp:
        big_file = Path(tmp) / "generated-1000.grow"
        big_file.write_text(generated(1000))
        big = [sys.executable, "-m", "lagdsl", "validate", str(big_file)]
        for cmd in (lagdsl, floor, big):
            wall(cmd)  # warm the file cache and lark's parser cache
        ours, base, large = [], [], []
        for _ in range(runs):
            ours.append(wall(lagdsl))
            base.append(wall(floor))
            large.append(wall(big))
    return {
        "runs": runs,
        "validate_median_s": statistics.median(ours),
        "import_floor_median_s": statistics.median(base),
        "ratio": statistics.median(ours) / statistics.median(base),
        "target_ratio": 1.5,
        "validate_1000_stages_median_s": statistics.median(large),
    }


def scaling(sizes: list[int], repeats: int) -> list[dict[str, object]]:
    from lagdsl.lang import check_text

    rows = []
    for n in sizes:
        text = generated(n)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            result = check_text(text, f"generated-{n}.grow")
            best = min(best, time.perf_counter() - start)
        assert result.ok and len(result.schedule.stages) == n, result.diagnostics[:3]
        rows.append({"stages": n, "seconds": best, "ms_per_stage": 1000 * best / n})
    return rows


def table(results: dict[str, object]) -> str:
    p = results["process"]
    lines = [
        f"Measured on {results['machine']} with Python {results['python']} (`python bench/validate.py`).",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| `lagdsl validate schedules/stack_lag.grow`, whole process (median of {p['runs']}) "
        f"| {p['validate_median_s'] * 1000:.0f} ms | |",
        f'| `python -c "import click, lark, pydantic, networkx"` (median of {p["runs"]}) '
        f"| {p['import_floor_median_s'] * 1000:.0f} ms | |",
        f"| ratio | **{p['ratio']:.2f}x** | <= {p['target_ratio']}x |",
        f"| `lagdsl validate` of a generated 1,000-stage LAG schedule, whole process (median of {p['runs']}) "
        f"| {p['validate_1000_stages_median_s'] * 1000:.0f} ms | <= 1 s |",
    ]
    for row in results["scaling"]:
        lines.append(
            f"| check a generated {row['stages']:,}-stage LAG schedule in process (best of {results['repeats']}) "
            f"| {row['seconds'] * 1000:.0f} ms ({row['ms_per_stage']:.2f} ms/stage) | flat ms/stage |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    results = {
        "machine": f"{platform.machine()}, {cores()} cores",
        "python": platform.python_version(),
        "repeats": args.repeats,
        "process": process_times(args.runs),
        "scaling": scaling([250, 500, 1000, 2000], args.repeats),
    }
    publish("validate", results, table(results), args.update_docs)


if __name__ == "__main__":
    main()
