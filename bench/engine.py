"""Benchmark: the engine against a hand-written training loop, and what is not training.

1. Steps/s of `lagdsl run` on a fixed-shape schedule against a minimal loop written here that
   trains the same model class with the same batches, optimizer and device (target: ratio >= 0.97).
   Both run in this process, alternating, medians of `--runs`.
2. On `schedules/stack_lag.grow` (or `--schedule`), the share of wall time spent outside training
   steps: growth, snapshots, restores, selection, evaluation, checkpoints, logging (target: <= 2%
   for everything but evaluation; evaluation is reported on its own). `--skip-overhead` leaves it
   out (a full stack_lag run takes minutes on a CPU).

Writes `bench/engine.json` and prints markdown; `--update-docs` puts it between the
`bench:engine` markers.

    python bench/engine.py [--runs 3] [--skip-overhead] [--update-docs]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import publish  # noqa: E402

from lagdsl.lang import check_text, load  # noqa: E402
from lagdsl.lang.lr import lr_at  # noqa: E402
from lagdsl.model import GPT, GPTConfig  # noqa: E402
from lagdsl.runtime.run.start import RunOptions, execute, prepare  # noqa: E402

FIXED = """
schedule fixed
model gpt(context=128, width=128, heads=4, depth=4)
batch 16
optimizer adamw(lr=1e-3)
lr cosine(warmup=10 steps, min=1e-4)
log every 10 steps
stage only {{ train {steps} steps }}
"""


def engine_steps_per_second(steps: int, folder: Path, index: int) -> float:
    text = FIXED.format(steps=steps)
    schedule = check_text(text, str(folder / "fixed.grow")).schedule
    engine, _run_dir = prepare(schedule, text, RunOptions(out=folder / f"run{index}", quiet=True))
    start = time.perf_counter()
    engine.run()
    seconds = time.perf_counter() - start
    engine.metrics.close()
    return steps / seconds


def hand_loop_steps_per_second(steps: int, folder: Path, index: int) -> float:
    """The loop a person would write: same model class, batches, AdamW, clipping, LR schedule."""
    text = FIXED.format(steps=steps)
    schedule = check_text(text, str(folder / "fixed.grow")).schedule
    engine, _ = prepare(schedule, text, RunOptions(out=folder / f"hand{index}", quiet=True))
    batches = engine.batches  # the same batches; the engine itself is not used
    engine.metrics.close()
    model = GPT(GPTConfig.from_schedule(schedule))
    model.init_weights(torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.param_groups(0.1), lr=1e-3, betas=(0.9, 0.95))
    start = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, schedule.lr, 1e-3, steps)
        inputs, targets = batches.train(step)
        _, loss = model(inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
    return steps / (time.perf_counter() - start)


def overhead(path: Path, folder: Path) -> dict[str, object]:
    result = load(path)
    schedule = result.schedule
    engine, run_dir = prepare(schedule, path.read_text(), RunOptions(out=folder / "overhead", quiet=True))
    eval_seconds = 0.0
    evaluate = engine.evaluate

    def timed_evaluate(model, batches=None):
        nonlocal eval_seconds
        start = time.perf_counter()
        value = evaluate(model, batches)
        eval_seconds += time.perf_counter() - start
        return value

    engine.evaluate = timed_evaluate  # type: ignore[method-assign]
    start = time.perf_counter()
    execute(engine, run_dir)
    wall = time.perf_counter() - start
    other = wall - engine.step_seconds - eval_seconds
    return {
        "schedule": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
        "wall_s": wall,
        "training_steps_s": engine.step_seconds,
        "evaluation_s": eval_seconds,
        "other_s": other,
        "other_share": other / wall,
        "evaluation_share": eval_seconds / wall,
        "target_other_share": 0.02,
    }


def table(results: dict[str, object]) -> str:
    s = results["speed"]
    lines = [
        f"Measured on {results['machine']}, torch {results['torch']} (`python bench/engine.py`).",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| `lagdsl run`, fixed shape (width 128, depth 4, batch 16 x 128), steps/s (median of {s['runs']}) "
        f"| {s['engine_steps_per_s']:.2f} | |",
        f"| hand-written loop, same model, batches and optimizer, steps/s | {s['hand_steps_per_s']:.2f} | |",
        f"| ratio | **{s['ratio']:.3f}** | >= 0.97 |",
    ]
    o = results.get("overhead")
    if o:
        lines += [
            f"| `{o['schedule']}`: wall time | {o['wall_s']:.0f} s | |",
            f"| of it outside training steps and evaluation (growth, snapshots, selection, checkpoints, logging) "
            f"| **{o['other_share']:.2%}** | <= 2% |",
            f"| of it in evaluation | {o['evaluation_share']:.2%} | |",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--schedule", type=Path, default=ROOT / "schedules" / "stack_lag.grow")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ours, hand = [], []
        for i in range(args.runs):
            ours.append(engine_steps_per_second(args.steps, folder, i))
            hand.append(hand_loop_steps_per_second(args.steps, folder, i))
        speed = {
            "runs": args.runs,
            "steps": args.steps,
            "engine_steps_per_s": statistics.median(ours),
            "hand_steps_per_s": statistics.median(hand),
            "ratio": statistics.median(ours) / statistics.median(hand),
        }
        results: dict[str, object] = {
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
            "torch": torch.__version__,
            "speed": speed,
        }
        if not args.skip_overhead:
            results["overhead"] = overhead(args.schedule.resolve(), folder)
    publish("engine", results, table(results), args.update_docs)


if __name__ == "__main__":
    main()
