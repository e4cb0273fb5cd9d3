"""Benchmark: several ranks on this machine's cores, and parallel probes.

1. The same schedule on 1 rank with 2 threads and on 2 ranks with 1 thread each (torchrun, Gloo):
   mainline steps/s of each and their ratio, and on 2 ranks the share of wall time spent in growth
   (the operator), re-wrapping (building DDP after a growth) and checkpointing (DCP, every rank).
   Target: growth + re-wrap <= 2% of a stack_lag-size run.
2. The probe phase (3 candidates, k steps each) on 2 ranks, `probes parallel` against `probes
   sequential`: wall seconds of the phase, and their ratio. Target <= 0.75x (ideal 2/3: two rounds
   instead of three). Measured at two sizes: the stack_lag shape, where a step's time grows with
   the rows a rank computes, and a small model, where it is mostly fixed cost (as for a GPU on a
   small per-GPU batch).

Every configuration runs `--repeats` times, interleaved; figures are means with min-max. Nothing
else may run meanwhile (two cores). Writes `bench/distributed.json`; `--update-docs` puts the table
in docs/benchmarks.md between the `bench:distributed` markers.

    python bench/distributed.py [--steps 100] [--repeats 2] [--update-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import cores, publish  # noqa: E402

SCHEDULE = """
schedule {name}
seed 1
probes {probes}
model gpt(vocab=256, context={context}, width={width}, heads=4, depth=2)
batch {batch}
optimizer adamw(lr=2e-3)
lr cosine(warmup=20 steps, min=2e-4)
checkpoint every {steps} steps (keep=2)
log every 10 steps

stage base {{ train {steps} steps }}
repeat 3 {{
  stage grow {{
    grow depth by 2 {{ candidates [copy_top, interleave, identity]  probe {probe} steps }}
    train {steps} steps
  }}
}}
"""

SIZES = {
    "stack_lag": {"width": 128, "context": 128, "batch": 32},  # the stack_lag schedule's shape
    "small": {"width": 32, "context": 32, "batch": 8},
}


def run(folder: Path, size: str, ranks: int, probes: str, steps: int, probe: int, index: int) -> dict[str, float]:
    """One run; its summary's wall seconds, steps and phases."""
    name = f"{size}_{ranks}_{probes}_{index}"
    path = folder / f"{name}.grow"
    path.write_text(SCHEDULE.format(name=name, probes=probes, steps=steps, probe=probe, **SIZES[size]))
    out = folder / name
    threads = 2 // ranks if cores() >= 2 else 1
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if ranks == 1:
        command = [sys.executable, "-m", "lagdsl", "run", "--quiet", str(path), "--out", str(out)]
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
        command = [*launcher, "-m", "lagdsl", "run", "--quiet", str(path), "--out", str(out)]
    subprocess.run(command, check=True, env=env, cwd=folder, capture_output=True)
    summary = json.loads((out / "summary.json").read_text())
    phases = summary["phase_seconds"]
    wall = summary["wall_seconds"]
    return {
        "wall_s": wall,
        "steps": summary["steps"],
        "mainline_steps_per_s": (summary["steps"] - 3 * probe) / phases["train"],  # keep winner: k per probe
        "growth_share": phases["growth"] / wall,
        "wrap_share": phases["wrap"] / wall,
        "checkpoint_share": phases["checkpoints"] / wall,
        "probe_s": phases["probes"],
    }


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="mainline steps per stage")
    parser.add_argument("--probe", type=int, default=10, help="probe steps per candidate")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()

    configs = [
        ("stack_lag", 1, "sequential"),
        ("stack_lag", 2, "sequential"),
        ("stack_lag", 2, "parallel"),
        ("small", 2, "sequential"),
        ("small", 2, "parallel"),
    ]
    results: dict[str, list[dict[str, float]]] = {f"{s}/{r}/{p}": [] for s, r, p in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.repeats):
            for size, ranks, probes in configs:
                figures = run(Path(tmp), size, ranks, probes, args.steps, args.probe, index)
                results[f"{size}/{ranks}/{probes}"].append(figures)
                print(size, ranks, probes, {k: round(v, 4) for k, v in figures.items()}, file=sys.stderr)

    def figure(key: str, field: str) -> dict[str, float]:
        return spread([r[field] for r in results[key]])

    one, two = "stack_lag/1/sequential", "stack_lag/2/sequential"
    ratios = [
        b["mainline_steps_per_s"] / a["mainline_steps_per_s"] for a, b in zip(results[one], results[two], strict=True)
    ]
    probe_ratio = {
        size: spread(
            [
                p["probe_s"] / s["probe_s"]
                for s, p in zip(results[f"{size}/2/sequential"], results[f"{size}/2/parallel"], strict=True)
            ]
        )
        for size in SIZES
    }
    report = {
        "machine": {"cores": cores(), "python": platform.python_version(), "processor": platform.processor()},
        "steps_per_stage": args.steps,
        "probe_steps": args.probe,
        "repeats": args.repeats,
        "one_rank_two_threads_steps_per_s": figure(one, "mainline_steps_per_s"),
        "two_ranks_one_thread_steps_per_s": figure(two, "mainline_steps_per_s"),
        "ratio_two_ranks_vs_one": spread(ratios),
        "two_ranks_growth_share": figure(two, "growth_share"),
        "two_ranks_wrap_share": figure(two, "wrap_share"),
        "two_ranks_growth_and_wrap_share": spread([r["growth_share"] + r["wrap_share"] for r in results[two]]),
        "two_ranks_checkpoint_share": figure(two, "checkpoint_share"),
        "parallel_vs_sequential_probe_time": probe_ratio,
        "runs": results,
    }
    publish("distributed", report, markdown(report), args.update_docs)


def markdown(report: dict) -> str:
    def show(figure: dict[str, float], digits: int = 3, percent: bool = False) -> str:
        if percent:
            return f"{figure['mean']:.2%} ({figure['min']:.2%}-{figure['max']:.2%})"
        return f"{figure['mean']:.{digits}g} ({figure['min']:.{digits}g}-{figure['max']:.{digits}g})"

    probes = report["parallel_vs_sequential_probe_time"]
    growth = show(report["two_ranks_growth_and_wrap_share"], percent=True)
    checkpoints = show(report["two_ranks_checkpoint_share"], percent=True)
    rows = [
        "| what (mean over runs, min-max) | measured | target |",
        "|---|---|---|",
        f"| mainline steps/s, 1 rank x 2 threads | {show(report['one_rank_two_threads_steps_per_s'])} | |",
        f"| mainline steps/s, 2 ranks x 1 thread | {show(report['two_ranks_one_thread_steps_per_s'])} | |",
        f"| ratio, 2 ranks / 1 rank | {show(report['ratio_two_ranks_vs_one'])} | |",
        f"| growth + re-wrap, share of wall time (2 ranks) | {growth} | <= 2% |",
        f"| checkpoints (DCP), share of wall time (2 ranks) | {checkpoints} | |",
        f"| probe phase, parallel / sequential, stack_lag shape | {show(probes['stack_lag'])} | <= 0.75 |",
        f"| probe phase, parallel / sequential, small model | {show(probes['small'])} | <= 0.75 |",
    ]
    note = (
        f"\n{report['machine']['cores']} cores, {report['repeats']} runs per configuration, "
        f"{report['steps_per_stage']} steps per stage, 3 candidates x {report['probe_steps']} probe steps."
    )
    return "\n".join(rows) + note


if __name__ == "__main__":
    main()
