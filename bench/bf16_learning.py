"""Benchmark: how a pretrained model held in bf16 learns at a healing learning rate, against fp32.

A base (a `gpt` of width 64, 2 layers) pretrained by lagdsl on the built-in corpus and exported is
healed `--steps` steps at lr 5e-5 (the shipped up-scaling recipes' range) four ways: weights in fp32
(`dtype=fp32`), fp32 weights with bf16 compute (`precision bf16`), weights and moments held in bf16
(`dtype=bf16`) with lagdsl's AdamW with compensated writes (what `dtype=bf16` runs), and the same
with torch's AdamW (what it ran before: updates below bf16's resolution are lost). Val loss after
the heal, mean and spread (min-max) over `--seeds` seeds of data order; the target is the bf16
optimizer within 0.005 of fp32.

Writes `bench/bf16_learning.json`; `--update-docs` puts the table in docs/benchmarks.md.

    python bench/bf16_learning.py [--steps 30] [--seeds 3] [--update-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT, ROOT / "bench"):
    sys.path.insert(0, str(folder))

from common import publish  # noqa: E402

BASE = """schedule base
seed 1
model gpt(context=64, width=64, heads=4, depth=2, tie=false)
data text("corpus/*.txt", val=0.1)
batch 8
optimizer adamw(lr=3e-3)
stage s { train 300 steps }
"""
HEAL = """schedule heal
{precision}
model pretrained("hf", context=64, dtype={dtype})
data text("corpus/*.txt", val=0.1)
batch 8
optimizer adamw(lr=5e-5)
eval every {steps} steps (batches=8)
stage s {{ train {steps} steps }}
"""
MODES = {  # name: (precision line, dtype, torch's AdamW)
    "fp32 weights": ("", "fp32", False),
    "fp32 weights, bf16 compute (`precision bf16`)": ("precision bf16", "fp32", False),
    "bf16 weights, compensated AdamW (`dtype=bf16`)": ("", "bf16", False),
    "bf16 weights, torch's AdamW (before)": ("", "bf16", True),
}


def lagdsl(*args: str) -> None:
    from click.testing import CliRunner

    from lagdsl.cli import main

    result = CliRunner().invoke(main, list(args))
    if result.exit_code != 0:
        raise RuntimeError(f"`lagdsl {' '.join(args)}` failed:\n{result.output[-2000:]}")


def torch_adamw(schedule, model, device, scales=None):  # type: ignore[no-untyped-def]
    spec = schedule.optimizer
    groups = model.param_groups(spec.weight_decay, scales)
    return torch.optim.AdamW(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps)


def measure(steps: int, seeds: int, work: Path) -> dict[str, object]:
    import lagdsl.runtime.state.train_state as train_state
    from tests.conftest import write_corpus

    compensated = train_state.make_optimizer
    write_corpus(work)
    os.chdir(work)
    (work / "base.grow").write_text(BASE)
    lagdsl("run", "--quiet", "base.grow", "--out", "base")
    lagdsl("export", "base", "-o", "hf")
    results: dict[str, list[float]] = {}
    for name, (precision, dtype, plain) in MODES.items():
        train_state.make_optimizer = torch_adamw if plain else compensated  # type: ignore[assignment]
        (work / "heal.grow").write_text(HEAL.format(precision=precision, dtype=dtype, steps=steps))
        for seed in range(1, seeds + 1):
            shutil.rmtree(work / "heal", ignore_errors=True)
            lagdsl("run", "--quiet", "heal.grow", "--out", "heal", "--seed", str(seed))
            evals = [json.loads(line) for line in (work / "heal" / "metrics.jsonl").open() if '"eval"' in line]
            results.setdefault(name, []).append(evals[-1]["val_loss"])
    train_state.make_optimizer = compensated
    base = [json.loads(line) for line in (work / "base" / "metrics.jsonl").open() if '"eval"' in line]
    return {"steps": steps, "seeds": seeds, "base_val": base[-1]["val_loss"] if base else None, "val": results}


def table(r: dict) -> str:
    fp32 = statistics.mean(r["val"]["fp32 weights"])
    lines = [
        f"A base pretrained by lagdsl (width 64, 2 layers, 300 steps), healed {r['steps']} steps at lr 5e-5; "
        f"val loss after the heal, mean (min-max) over {r['seeds']} seeds (`python bench/bf16_learning.py`):",
        "",
        "| weights and optimizer | val loss | minus fp32 |",
        "|---|---|---|",
    ]
    for name, values in r["val"].items():
        mean = statistics.mean(values)
        lines.append(f"| {name} | {mean:.4f} ({min(values):.4f}-{max(values):.4f}) | {mean - fp32:+.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        result = measure(args.steps, args.seeds, Path(folder))
    os.chdir(here)
    publish("bf16_learning", result, table(result), args.update_docs)


if __name__ == "__main__":
    main()
