"""Benchmark: memory per rank of growing a sharded model (`parallel fsdp`), phase by phase, now
(each rank's shards moved: `lagdsl.runtime.distributed.moves`) against the version before (the whole state
gathered on every rank at each growth, snapshot and start), and against `lagdsl plan --ranks N`.

The runs: a `gpt` on the built-in corpus (fp32, AdamW), trained 1 step at 8 layers of width 3/4 of
`--width`, grown to `--width` by `net2net` (1024: 57M -> 103M parameters), trained 1 step, grown
8 -> 16 layers (205M) and trained 2 more steps, with a checkpoint after each step; the depth growth
is `copy_top` in one run (`plain`: a growth outside a probe) and a probe of `copy_top` and
`interleave` (1 step each, keep winner) in the other (`probe`); under torchrun on each of
`--ranks` (one thread a rank). Each rank measures its resident memory per
phase of the engine (start-up, train, the width growth, the depth growth, probes, checkpoints, and
the final model): the peak
(VmHWM, reset through /proc/self/clear_refs as each phase begins) less the resident memory just
before the model is built (the libraries, the open corpus), so the figure is the phase's tensors
and the allocator's slack, not the fixed cost of the process. glibc is told to give large blocks back at once
(MALLOC_MMAP_THRESHOLD_), so a phase does not inherit the peak of the one before. The figure per
phase is the largest rank's.

Before: the same run with the lagdsl of commit `BEFORE` (the last one whose FSDP runs gathered),
extracted from git into a temporary folder. Targets (issue 24): growth's peak per rank <= (model +
optimizer) / N + 2 blocks, and <= 0.6x the version before's at 2 ranks; and the plan does not
under-report any phase, nor over-report it by more than 25%. Nothing else may run meanwhile.

    python bench/fsdp_memory.py [--ranks 2,4] [--width 1024] [--update-docs]
    python bench/fsdp_memory.py --plan-only [--update-docs]   # the measurements kept, the plan's column again
    python bench/fsdp_memory.py --reuse-before [--update-docs]   # the version before's measurements kept

About 25 minutes on two cores (10 with `--reuse-before`: the version before does not change);
needs about 16 GB of memory at 2 ranks for the version before.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import cores, publish  # noqa: E402

#: the last commit whose FSDP runs gathered the whole state at growths, snapshots and start-up
BEFORE = "93e4edf"
MIB = 1 << 20

SCHEDULE = """\
schedule fsdp_memory
seed 0
parallel fsdp
precision fp32
model gpt(context=64, width={narrow}, heads={narrow_heads}, depth=8)
batch 4
optimizer adamw(lr=1e-4)
checkpoint every 1 steps (keep=1)
stage base {{ train 1 steps }}
stage wide {{ grow width to {width} with net2net  train 1 steps }}
stage deep {{
  {deep}
  train 2 steps
}}
"""

#: the depth growth of each run
DEEP = {
    "plain": "grow depth to 16 with copy_top",
    "probe": "grow depth to 16 { candidates [copy_top, interleave] probe 1 steps }",
}

#: each rank's wrapper: the engine's phases measured, then `lagdsl run`
RANK = textwrap.dedent("""
    import atexit, json, os, sys
    from contextlib import contextmanager

    def status(field):
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024

    def reset():
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")

    import torch  # noqa: F401
    from lagdsl.cli import main
    from lagdsl.runtime.training import engine

    sys.path.insert(0, os.environ["BENCH_DIR"])
    from common import NestedPeaks

    baseline = [status("VmRSS")]
    peaks, seen = {}, [False]
    phases = NestedPeaks(lambda: status("VmHWM"), reset)

    def note(phase, value):
        peaks[phase] = max(peaks.get(phase, 0), value - baseline[0])

    def starts(method):  # the baseline: what is resident once the data is open, before the model
        def wrapped(self, *args):
            baseline[0] = status("VmRSS")
            reset()
            return method(self, *args)

        return wrapped

    engine.Engine.initialize = starts(engine.Engine.initialize)
    engine.Engine.load = starts(engine.Engine.load)
    original = engine.Engine._timed

    @contextmanager
    def timed(self, name):
        phase = "growth (width)" if name == "growth" and getattr(self, "stage_name", "") == "wide" else name
        if not phases.open:
            note("start" if not seen[0] else "between", status("VmHWM"))
        seen[0] = True
        phases.enter()
        try:
            with original(self, name):
                yield
        finally:
            note(phase, phases.leave())

    engine.Engine._timed = timed

    def write():
        note("final", status("VmHWM"))
        rank = os.environ.get("RANK", "0")
        with open(os.path.join(os.environ["BENCH_OUT"], f"rank{rank}.json"), "w") as handle:
            json.dump({"baseline": baseline, "peaks": peaks}, handle)

    atexit.register(write)
    leave = os._exit  # a torchrun rank ends with os._exit once its process group is gone

    def exit_(code):
        write()
        leave(code)

    os._exit = exit_
    sys.argv = ["lagdsl", *sys.argv[1:]]
    main()
""")

#: the phases reported, in order: the name shown -> (the run, the engine's name of the phase (its
#: timers'), the plan's)
PHASES = {
    "start": ("plain", "start", "start"),  # the model built and sharded
    "train": ("plain", "train", "train"),  # training steps
    "growth (width)": ("plain", "growth (width)", "growth (width)"),  # the width growth (net2net)
    "growth": ("plain", "growth", "growth"),  # the depth growth, outside a probe
    "growth (in a probe)": ("probe", "growth", "growth"),  # a candidate's, beside the snapshot and the best
    "probes": ("probe", "probes", "probe"),  # the probe: snapshot, candidates grown and trained, the winner
    "checkpoints": ("plain", "checkpoints", "checkpoint"),
    "final": ("plain", "final", "final"),  # the final model written (now each rank's shards; before gathered)
}


def run(project: Path, schedule: str, ranks: int, package: Path, label: str) -> dict[str, int]:
    """The largest rank's peak above its baseline, per phase, of one run of `schedule` with the
    lagdsl found in `package`."""
    out = project / f"peaks-{schedule}-{label}-{ranks}"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536", "BENCH_OUT": str(out)}
    env["BENCH_DIR"] = str(ROOT / "bench")  # where the ranks find `common`
    env["PYTHONPATH"] = str(package)  # this tree's lagdsl, or the version before's
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    command += [str(project / "rank.py"), "run", "--quiet", f"{schedule}.grow"]
    command += ["--out", f"run-{schedule}-{label}-{ranks}"]
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{schedule} {label} on {ranks} ranks failed:\n{result.stderr[-4000:]}")
    peaks: dict[str, int] = {}
    for path in out.glob("rank*.json"):
        for phase, value in json.loads(path.read_text())["peaks"].items():
            peaks[phase] = max(peaks.get(phase, 0), value)
    return peaks


def planned(project: Path, schedule: str, ranks: int) -> dict[str, int]:
    """What `lagdsl plan --ranks N` says of each phase of `schedule` (the largest over the stages;
    the width stage's growth apart)."""
    command = [sys.executable, "-m", "lagdsl", "plan", f"{schedule}.grow", "--ranks", str(ranks), "--format", "json"]
    text = subprocess.run(command, cwd=project, capture_output=True, text=True, check=True).stdout
    phases: dict[str, int] = {}
    for stage in json.loads(text)["stages"]:
        for phase, value in stage["phases"].items():
            if phase == "growth" and stage["name"] == "wide":
                phase = "growth (width)"
            phases[phase] = max(phases.get(phase, 0), value)
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", default="2,4")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--update-docs", action="store_true")
    parser.add_argument("--plan-only", action="store_true", help="keep bench/fsdp_memory.json's measurements")
    parser.add_argument("--reuse-before", action="store_true", help="keep its measurements of the version before")
    args = parser.parse_args()
    reuse = args.plan_only or args.reuse_before
    kept = json.loads((ROOT / "bench" / "fsdp_memory.json").read_text()) if reuse else None
    with tempfile.TemporaryDirectory(prefix="fsdp-memory-") as work:
        project = Path(work)
        narrow = args.width * 3 // 4
        for name, deep in DEEP.items():
            text = SCHEDULE.format(narrow=narrow, narrow_heads=narrow // 64, width=args.width, deep=deep)
            (project / f"{name}.grow").write_text(text)
        (project / "rank.py").write_text(RANK)
        before = project / "before"
        before.mkdir()
        sources = ["git", "archive", BEFORE, "lagdsl", "grammars"]
        archive = subprocess.run(sources, cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        from lagdsl.lang import check_text
        from lagdsl.plan import build_plan

        schedule = check_text((project / "plain.grow").read_text()).schedule
        assert schedule is not None
        final = build_plan(schedule, 1).stages[-1]
        state = final.memory.weights + final.memory.optimizer  # the whole model and optimizer, at 16 layers
        block = 4 * final.shape.non_embedding // final.shape.depth
        rows = []
        for ranks in [int(r) for r in args.ranks.split(",")]:
            row = next(row for row in kept["rows"] if row["ranks"] == ranks) if kept is not None else None
            runs: dict[str, dict[str, dict[str, int]]] = {"now": {}, "before": {}, "plan": {}}
            for name in DEEP:
                runs["plan"][name] = planned(project, name, ranks)
                for label, package in (("now", ROOT), ("before", before)):
                    keep = args.plan_only or label == "before"  # what is kept, where it was measured
                    if row is not None and keep and name in row["runs"][label]:
                        runs[label][name] = row["runs"][label][name]
                    else:
                        runs[label][name] = run(project, name, ranks, package, label)
            now, old, plan = ({shown: runs[kind][r].get(phase if kind != "plan" else planned_as)
                               for shown, (r, phase, planned_as) in PHASES.items()}
                              for kind in ("now", "before", "plan"))  # fmt: skip
            target = state // ranks + 2 * block
            rows.append({
                "ranks": ranks, "runs": runs, "now": now, "before": old, "plan": plan,
                "growth_target": target, "growth_ratio": now["growth"] / old["growth"],
                "width_ratio": now["growth (width)"] / old["growth (width)"],
                "plan_ratio": {phase: plan[phase] / now[phase] for phase in PHASES if now.get(phase) and plan[phase]},
            })  # fmt: skip
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "runs"}), flush=True)
    result = {
        "what": "peak memory per rank above the imported libraries, largest rank, per phase",
        "params": final.shape.params, "state_bytes": state, "block_bytes": block, "before": BEFORE,
        "cores": cores(), "machine": platform.processor() or platform.machine(), "rows": rows,
    }  # fmt: skip
    publish("fsdp_memory", result, _table(result), args.update_docs)


def _table(result: dict) -> str:
    lines = [
        f"{result['params'] / 1e6:.0f}M parameters at 16 layers (fp32, AdamW: model + optimizer "
        f"{result['state_bytes'] / MIB:,.0f} MiB, a block {result['block_bytes'] / MIB:,.0f} MiB), "
        f"grown 8 -> 16 layers; MiB per rank above the imported libraries, largest rank:",
        "",
        "| ranks | phase | now | before | now / before | plan | plan / now |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        for phase in PHASES:
            now, old, plan = row["now"].get(phase), row["before"].get(phase), row["plan"].get(phase)
            cells = [
                str(row["ranks"]), phase,
                f"{now / MIB:,.0f}" if now else "-", f"{old / MIB:,.0f}" if old else "-",
                f"{now / old:.2f}" if now and old else "-", f"{plan / MIB:,.0f}" if plan else "-",
                f"{plan / now:.2f}" if plan and now else "-",
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        lines.append(f"| {row['ranks']} | growth target | {row['growth_target'] / MIB:,.0f} | | | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
