"""Benchmark: growth against scratch at a fixed FLOP budget, as the literature compares them.

For a budget of training FLOPs, scratch trains the final shape (8 layers) for as many steps as the
budget buys; the grown run stacks 2 -> 4 -> 8 layers with `copy_top` (G_stack), growing early, and
trains for as many steps as the same budget buys at its smaller early shapes. Both use the same
data, batch, optimizer and a cosine LR over their own steps (the grown run rewarms for 10 steps
after each growth). The final val loss of each, over `--seeds` seeds, at two budgets; at the larger
budget the growth point is swept: last growth at 10%, 25% and 50% of training.

The model family is the lag study's (width 96, context 128, batch 16: bytes of the standard
library): the largest that gives 3 seeds of every run in about half an hour on two cores. FLOPs are
lagdsl's cost model (the same one `lagdsl plan` and the summaries use), so the budgets match to
within one step.

Writes `bench/fixed_budget.json`; `--update-docs` puts the table in docs/benchmarks.md
(`bench:fixed_budget`). Nothing else may run meanwhile.

    python bench/fixed_budget.py [--seeds 3] [--steps 300,600] [--update-docs]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from common import cores, update_docs  # noqa: E402

from lagdsl.lang import check_text  # noqa: E402
from lagdsl.lang.schedule import Schedule, Shape  # noqa: E402
from lagdsl.plan.cost import CostModel  # noqa: E402
from lagdsl.runtime.run.start import RunOptions, execute, prepare  # noqa: E402

HEAD = """
schedule {name}
seed {seed}
model gpt(vocab=256, context=128, width=96, heads=4, depth={depth})
data stdlib(val=0.05)
batch 16
optimizer adamw(lr=2e-3, betas=(0.9, 0.95), weight_decay=0.1)
lr cosine(warmup={warmup} steps, min=2e-4)
eval every {every} steps (batches=16)
"""
SCRATCH = HEAD + "stage only {{ train {steps} steps }}\n"
GROWN = (
    HEAD
    + """stage small {{ train {a} steps }}
stage middle {{ grow depth to 4 with copy_top  rewarm 10 steps  train {b} steps }}
stage full {{ grow depth to 8 with copy_top  rewarm 10 steps  train {c} steps }}
"""
)
#: growth points: the fractions of the grown run's steps at which it reaches 4 and 8 layers
POINTS = {"10%": (0.05, 0.10), "25%": (0.10, 0.25), "50%": (0.25, 0.50)}


def schedule(text: str) -> Schedule:
    checked = check_text(text, str(ROOT / "bench" / "fixed_budget.grow"))
    if checked.schedule is None:
        raise ValueError([d.message for d in checked.diagnostics])
    return checked.schedule


def step_flops(depth: int) -> float:
    text = SCRATCH.format(name="probe", seed=0, depth=depth, warmup=1, every=1, steps=1)
    return CostModel(schedule(text)).step_flops(Shape(depth=depth, width=96, heads=4), 1)


def grown_steps(budget: float, point: tuple[float, float]) -> tuple[int, int, int]:
    """Steps at 2, 4 and 8 layers whose FLOPs are the budget (the last rounded to fit)."""
    first, second = point
    per_step = first * step_flops(2) + (second - first) * step_flops(4) + (1 - second) * step_flops(8)
    total = budget / per_step
    a, b = round(total * first), round(total * (second - first))
    c = round((budget - a * step_flops(2) - b * step_flops(4)) / step_flops(8))
    return a, b, c


def train(text: str, folder: Path, name: str) -> dict[str, Any]:
    sched = schedule(text)
    started = time.perf_counter()
    engine, run_dir = prepare(sched, text, RunOptions(out=folder / name, quiet=True))
    execute(engine, run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "final_val_loss": summary["final_val_loss"],
        "flops": summary["flops"],
        "steps": summary["steps"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", default="300,600", help="The budgets, as scratch steps at 8 layers.")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "fixed_budget.json")
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    budgets = [int(s) for s in args.steps.split(",")]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for seed in range(1, args.seeds + 1):
            for steps in budgets:
                budget = steps * step_flops(8)
                every = max(1, steps // 4)
                warmup = max(2, steps // 20)
                row = {"seed": seed, "budget_steps": steps, "budget_flops": budget}
                row["scratch"] = train(
                    SCRATCH.format(name="scratch", seed=seed, depth=8, warmup=warmup, every=every, steps=steps),
                    folder, f"scratch-{seed}-{steps}",
                )  # fmt: skip
                points = POINTS if steps == max(budgets) else {"25%": POINTS["25%"]}
                for label, point in points.items():
                    a, b, c = grown_steps(budget, point)
                    text = GROWN.format(name="grown", seed=seed, depth=2, warmup=warmup,
                                        every=max(1, (a + b + c) // 4), a=a, b=b, c=c)  # fmt: skip
                    row[f"grown {label}"] = train(text, folder, f"grown-{seed}-{steps}-{label}")
                print(json.dumps(row), flush=True)
                runs.append(row)
    result = {
        "machine": f"{platform.machine()}, {cores()} cores",
        "model": "gpt width 96, heads 4, context 128, final depth 8, batch 16, bytes",
        "seeds": args.seeds,
        "budgets": budgets,
        "runs": runs,
        "table": table(runs, budgets),
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    print(text)
    if args.update_docs:
        update_docs("fixed_budget", text)


def table(runs: list[dict[str, Any]], budgets: list[int]) -> list[dict[str, Any]]:
    rows = []
    for steps in budgets:
        mine = [r for r in runs if r["budget_steps"] == steps]
        for key in [k for k in mine[0] if k == "scratch" or k.startswith("grown")]:
            losses = [r[key]["final_val_loss"] for r in mine]
            diffs = [r[key]["final_val_loss"] - r["scratch"]["final_val_loss"] for r in mine]
            rows.append({
                "budget_steps": steps,
                "run": key,
                "val_mean": statistics.mean(losses),
                "val_sd": statistics.stdev(losses) if len(losses) > 1 else 0.0,
                "minus_scratch_mean": statistics.mean(diffs),
                "minus_scratch_sd": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
                "flops_ratio": statistics.mean(r[key]["flops"] / r["scratch"]["flops"] for r in mine),
                "steps": statistics.mean(r[key]["steps"] for r in mine),
                "seconds": statistics.mean(r[key]["seconds"] for r in mine),
            })  # fmt: skip
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Measured on {result['machine']} (`python bench/fixed_budget.py`): {result['model']}; "
        f"{result['seeds']} seeds, mean ± sd. Budget: the FLOPs of scratch's steps at 8 layers; the grown runs "
        "(2 -> 4 -> 8 layers, `copy_top`, last growth at the given share of training) train as many steps as "
        "the same FLOPs buy. `- scratch`: the paired difference in final val loss (negative: growth is better).",
        "",
        "| budget (scratch steps) | run | steps | FLOPs / scratch | final val loss | - scratch | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["table"]:
        diff = "" if row["run"] == "scratch" else f"{row['minus_scratch_mean']:+.4f} ± {row['minus_scratch_sd']:.4f}"
        lines.append(
            f"| {row['budget_steps']} | {row['run']} | {row['steps']:.0f} | {row['flops_ratio']:.3f} | "
            f"{row['val_mean']:.4f} ± {row['val_sd']:.4f} | {diff} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
