"""Benchmark: gradual stacking with LAG (`bench/grow.grow`) against training the final shape from
scratch (`bench/scratch.grow`), the same mainline steps, on the built-in corpus.

For each seed, runs both schedules (interleaved, so the machine's noise hits both), then measures
on the logged curves (val loss at each evaluation, linearly interpolated):

- the FLOPs (probes included) and wall time the grown runs need to reach the scratch runs' mean
  final val loss, as a fraction of the scratch runs' mean totals (target: <= 0.75 in FLOPs);
- the same the other way round, and each run's final val loss, as means over seeds with spread.

Writes `bench/growth_vs_scratch.json` and a markdown table; `--update-docs` puts the table in the
docs/benchmarks.md between the `bench:growth` markers. Runs go to `bench/out/` (kept, so `--reuse` can analyse
them again without training).

    python bench/growth_vs_scratch.py [--seeds 3] [--long] [--reuse] [--update-docs]

`--long` runs `bench/grow_long.grow` against `bench/scratch_long.grow` instead: the same schedules
at twice the steps (720, about 8 to 10 minutes a run here), into `bench/growth_vs_scratch_long.json`
and the `bench:growth_long` markers of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import cores, update_docs  # noqa: E402

from lagdsl.analysis.curves import interpolate  # noqa: E402
from lagdsl.analysis.runlog import RunLog, read_run  # noqa: E402
from lagdsl.analysis.stats import Spread  # noqa: E402
from lagdsl.runtime.run.start import schedule_hash  # noqa: E402

TARGET = 0.75


@dataclass(frozen=True)
class Length:
    """One pair of schedules and where its results go."""

    grown: str
    scratch: str
    out: str  # under bench/out/
    json: str  # beside this script
    marker: str  # the bench:NAME markers in docs/benchmarks.md

    def schedule(self, kind: str) -> Path:
        return ROOT / "bench" / (self.grown if kind == "grown" else self.scratch)


LENGTHS = {
    "short": Length("grow.grow", "scratch.grow", "growth", "growth_vs_scratch.json", "growth"),
    "long": Length("grow_long.grow", "scratch_long.grow", "growth-long", "growth_vs_scratch_long.json", "growth_long"),
}


def run(length: Length, kind: str, seed: int, reuse: bool) -> RunLog:
    out = ROOT / "bench" / "out" / length.out / f"{kind}-seed{seed}"
    path = length.schedule(kind)
    if reuse and (out / "summary.json").exists():
        log = read_run(out)
        if log.finished and log.meta is not None and log.meta.schedule_hash == schedule_hash(path.read_text()):
            return log  # a finished run of this very schedule
    if out.exists():
        subprocess.run(["rm", "-rf", str(out)], check=True)
    cmd = [sys.executable, "-m", "lagdsl", "run", str(path), "--seed", str(seed), "--out", str(out)]
    subprocess.run([*cmd, "--quiet"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return read_run(out)


def reach(log: RunLog, target: float) -> tuple[float | None, float | None]:
    """(FLOPs, seconds) at which `log`'s val curve first comes down to `target`."""
    step = log.step_reaching(target)
    if step is None:
        return None, None
    return log.flops_at(step), log.seconds_at(step)


def compare(runs: dict[str, list[RunLog]], a: str, b: str) -> dict[str, object]:
    """How much of `b`'s mean FLOPs and wall time `a`'s runs need to reach `b`'s mean final val loss."""
    target = Spread.of([r.final_val_loss for r in runs[b]]).mean
    total_flops = Spread.of([r.total_flops for r in runs[b]]).mean
    total_seconds = Spread.of([r.summary.wall_seconds for r in runs[b]]).mean
    flops, seconds, per_seed = [], [], []
    for log in runs[a]:
        f, s = reach(log, target)
        per_seed.append({"seed": log.meta.seed if log.meta else None, "flops": f, "seconds": s})
        if f is not None:
            flops.append(f / total_flops)
            seconds.append(s / total_seconds)
    reached = len(flops)
    return {
        "target_val_loss": target,
        "reached": f"{reached}/{len(runs[a])}",
        "flops_ratio": Spread.of(flops).as_dict() if reached == len(runs[a]) else None,
        "seconds_ratio": Spread.of(seconds).as_dict() if reached == len(runs[a]) else None,
        "flops_ratio_of_seeds_that_reached": Spread.of(flops).as_dict(),
        "seconds_ratio_of_seeds_that_reached": Spread.of(seconds).as_dict(),
        "per_seed": per_seed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--reuse", action="store_true", help="keep finished runs of the same schedules in bench/out")
    parser.add_argument("--long", action="store_true", help="the schedules at twice the steps")
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    length = LENGTHS["long" if args.long else "short"]
    runs: dict[str, list[RunLog]] = {"grown": [], "scratch": []}
    for seed in range(1, args.seeds + 1):
        for kind in ("scratch", "grown"):
            runs[kind].append(run(length, kind, seed, args.reuse))
            log = runs[kind][-1]
            print(
                f"{kind} seed {seed}: final val loss {log.final_val_loss:.4f}, {log.total_flops:.3g} FLOPs, "
                f"{log.summary.wall_seconds} s",
                file=sys.stderr,
            )

    def spread(kind: str, key: str) -> dict[str, object]:
        return Spread.of([float(getattr(r.summary, key)) for r in runs[kind]]).as_dict()

    # the scratch runs' val loss when they had spent what a grown run spends in all
    grown_flops = Spread.of([r.total_flops for r in runs["grown"]]).mean
    at_equal = [interpolate([r.flops_at(s) for s in r.val_curve()[0]], r.val_curve()[1], grown_flops)
                for r in runs["scratch"]]  # fmt: skip
    grown_vs_scratch = compare(runs, "grown", "scratch")
    scratch_vs_grown = compare(runs, "scratch", "grown")
    ratio = grown_vs_scratch["flops_ratio"]
    result = {
        "machine": f"{platform.machine()}, {cores()} cores",
        "schedules": {"grown": f"bench/{length.grown}", "scratch": f"bench/{length.scratch}"},
        "steps": runs["scratch"][0].summary.steps,
        "seeds": list(range(1, args.seeds + 1)),
        "final_val_loss": {kind: spread(kind, "final_val_loss") for kind in runs},
        "flops": {kind: spread(kind, "flops") for kind in runs},
        "wall_seconds": {kind: spread(kind, "wall_seconds") for kind in runs},
        "scratch_val_loss_at_grown_flops": Spread.of(at_equal).as_dict(),
        "grown_to_reach_scratch": grown_vs_scratch,
        "scratch_to_reach_grown": scratch_vs_grown,
        "target_flops_ratio": TARGET,
        "met": ratio is not None and ratio["mean"] <= TARGET,
    }
    (ROOT / "bench" / length.json).write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    print(table)
    if args.update_docs:
        update_docs(length.marker, table)


def _show(d: dict[str, object] | None, digits: int = 3, scale: float = 1.0) -> str:
    if d is None or d["n"] == 0:
        return "not reached"
    mean, std = float(d["mean"]) * scale, float(d["std"]) * scale
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _reach(c: dict[str, object], key: str) -> str:
    """The ratio over the seeds that reached the target, and how many did."""
    if c[key] is not None:
        return f"{_show(c[key])} (all {c['reached'].split('/')[1]} seeds)"
    partial = c[f"{key}_of_seeds_that_reached"]
    reached = c["reached"]
    if partial is None or partial["n"] == 0:
        return f"not reached ({reached} seeds reached it)"
    return f"{_show(partial)} in the {reached} seeds that reached it"


def markdown(r: dict[str, object]) -> str:
    g, s = r["grown_to_reach_scratch"], r["scratch_to_reach_grown"]
    fv, fl, ws = r["final_val_loss"], r["flops"], r["wall_seconds"]
    n = len(r["seeds"])
    lines = [
        f"Machine: {r['machine']}; {r['steps']} mainline steps; {n} seeds; mean ± sample standard deviation "
        "over seeds.",
        "",
        f"| | grown (`{r['schedules']['grown']}`) | scratch (`{r['schedules']['scratch']}`) |",
        "|---|---|---|",
        f"| final val loss | {_show(fv['grown'])} | {_show(fv['scratch'])} |",
        f"| training TFLOPs (probes included) | {_show(fl['grown'], 2, 1e-12)} | {_show(fl['scratch'], 2, 1e-12)} |",
        f"| wall seconds | {_show(ws['grown'], 0)} | {_show(ws['scratch'], 0)} |",
        f"| val loss at the grown runs' mean FLOPs | {_show(fv['grown'])} (their final) | "
        f"{_show(r['scratch_val_loss_at_grown_flops'])} (interpolated) |",
        f"| FLOPs to reach the other's mean final val loss ({g['target_val_loss']:.3f} / {s['target_val_loss']:.3f}), "
        f"/ the other's mean FLOPs | {_reach(g, 'flops_ratio')} | {_reach(s, 'flops_ratio')} |",
        f"| wall time to reach it, / the other's mean wall time | {_reach(g, 'seconds_ratio')} | "
        f"{_reach(s, 'seconds_ratio')} |",
        "",
        f"Target: the grown runs reach the scratch runs' mean final val loss with <= {r['target_flops_ratio']}x "
        f"their FLOPs: **{'met' if r['met'] else 'not met'}**.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
