"""The CUDA checks, as one script for a machine with a GPU: bf16 autocast, fused AdamW, growth on
the device, torch.compile after growth, throughput, and the same schedule under torchrun with DDP
and with FSDP2 (NCCL; on every GPU there is, at least one). Writes `bench/device_checks.json` and
prints markdown.

    python bench/device_checks.py                 # on a CUDA machine (a few minutes)
    python bench/device_checks.py --device cpu --small   # checks the script itself on a CPU (seconds)

Each check prints PASS or FAIL with its figures; the exit code is the number of failures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lagdsl.lang import check_text  # noqa: E402
from lagdsl.model import GPT, GPTConfig  # noqa: E402
from lagdsl.ops import GrowthSpec, check_training_state, grow  # noqa: E402
from lagdsl.runtime.run.start import RunOptions, execute, prepare  # noqa: E402
from lagdsl.runtime.training.engine import Device, make_optimizer  # noqa: E402

SCHEDULE = """
schedule cuda_check
device "{device}"
precision {precision}
compile {compile}
model gpt(context={context}, width={width}, heads={heads}, depth=2)
batch {batch}
optimizer adamw(lr=1e-3)
lr cosine(warmup=10 steps, min=1e-4)
eval every {half} steps (batches=2)
stage base {{ train {half} steps }}
stage grown {{
  grow depth by 2 {{ candidates [copy_top, identity] probe 5 steps }}
  train {half} steps
}}
"""


def schedule_text(device: str, precision: str, compile_on: bool, small: bool) -> str:
    width, heads, context, batch, half = (64, 2, 64, 4, 20) if small else (768, 12, 512, 16, 60)
    return SCHEDULE.format(
        device=device, precision=precision, compile="on" if compile_on else "off", context=context,
        width=width, heads=heads, batch=batch, half=half,
    )  # fmt: skip


def step_losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").open() if '"event":"step"' in line]


def run_schedule(device: str, precision: str, compile_on: bool, small: bool, folder: Path) -> dict[str, object]:
    text = schedule_text(device, precision, compile_on, small)
    schedule = check_text(text, str(ROOT / "schedules" / "cuda_check.grow")).schedule
    assert schedule is not None
    out = folder / f"{precision}-{'compiled' if compile_on else 'eager'}"
    engine, run_dir = prepare(schedule, text, RunOptions(out=out, quiet=True))
    fused = bool(engine.state.optimizer.defaults.get("fused"))
    start = time.perf_counter()
    result = execute(engine, run_dir)
    seconds = time.perf_counter() - start
    losses = step_losses(run_dir)
    return {
        "precision": precision,
        "compile": compile_on,
        "fused_adamw": fused,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "final_val_loss": result.summary.final_val_loss,
        "seconds": seconds,
        "tokens_per_s": result.summary.tokens_per_s,
        "finished": result.summary.finished,
    }


def run_ranks(device: str, precision: str, parallel: str, ranks: int, small: bool, folder: Path) -> dict[str, object]:
    """The eager schedule under torchrun on `ranks` ranks with `parallel`; its losses and speed."""
    text = schedule_text(device, precision, False, small).replace("compile off", f"compile off\nparallel {parallel}")
    path = folder / f"{parallel}-{ranks}.grow"
    path.write_text(text)
    out = folder / f"{parallel}-{ranks}"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*launcher, "-m", "lagdsl", "run", "--quiet", str(path), "--out", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    summary = json.loads((out / "summary.json").read_text())
    return {"losses": step_losses(out), "tokens_per_s": summary["tokens_per_s"], "finished": summary["finished"]}


def growth_on_device(device: str) -> dict[str, object]:
    dev = torch.device(device)
    config = GPTConfig(256, 64, 64, 4, 2)
    model = GPT(config)
    model.init_weights(torch.Generator().manual_seed(0))
    model = model.to(dev)
    schedule = check_text("model gpt(context=64, width=64, heads=4, depth=2)\nbatch 2\noptimizer adamw(lr=1e-3)\n"
                          "stage a { train 1 steps }").schedule  # fmt: skip
    optimizer = make_optimizer(schedule, model, dev)
    idx = torch.randint(0, 256, (2, 64), device=dev)
    _, loss = model(idx, idx)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    with torch.no_grad():
        before = model(idx)[0]
    gaps = {}
    for op, dim, target in (("zero", "width", 128), ("net2net", "width", 128), ("identity", "depth", 4)):
        m = GPT(config)
        m.load_state_dict(model.state_dict())
        m = m.to(dev)
        opt = make_optimizer(schedule, m, dev)
        opt.load_state_dict(optimizer.state_dict())
        grown = grow(m, opt, GrowthSpec(op, dim, target), torch.Generator().manual_seed(1))
        check_training_state(grown.model, grown.optimizer)
        with torch.no_grad():
            gaps[op] = (grown.model(idx)[0] - before).abs().max().item()
        _, loss = grown.model(idx, idx)
        loss.backward()
        grown.optimizer.step()
    return gaps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="tiny sizes: checks the script, not the device")
    parser.add_argument("--json", type=Path, help="where the results go (default: bench/device_checks.json)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here: nothing to check (use --device cpu --small to check the script)")
        return 0
    failures = 0
    lines = [f"Measured on {torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'}, "
             f"torch {torch.__version__} (`python bench/device_checks.py`).", "",
             "| check | result | figures |", "|---|---|---|"]  # fmt: skip

    def report(name: str, ok: bool, figures: str) -> None:
        nonlocal failures
        failures += not ok
        print(f"{'PASS' if ok else 'FAIL'} {name}: {figures}")
        lines.append(f"| {name} | {'pass' if ok else '**FAIL**'} | {figures} |")

    results: dict[str, object] = {"device": args.device, "torch": torch.__version__}
    gaps = growth_on_device(args.device)
    results["growth_gaps"] = gaps
    report(
        "growth on the device preserves the function (fp32)",
        all(gaps[op] < 1e-4 for op in gaps),
        ", ".join(f"{op} {gap:.1e}" for op, gap in gaps.items()),
    )
    precision = "bf16" if args.device.startswith("cuda") else "fp32"
    resolved = Device.resolve(args.device, "auto")
    report("precision auto resolves", True, f"{resolved.dtype or 'fp32'}")
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for mode, compile_on in (("eager", False), ("compiled", True)):
            runs[mode] = run_schedule(args.device, precision, compile_on, args.small, Path(tmp))
            r = runs[mode]
            report(
                f"{precision} {mode} run with a probe and growth",
                r["finished"] and r["last_loss"] < r["first_loss"],
                f"loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}, val {r['final_val_loss']:.3f}, "
                f"{r['tokens_per_s']:,.0f} tokens/s, fused AdamW {r['fused_adamw']}",
            )
        if args.device.startswith("cuda"):
            report("fused AdamW on CUDA", bool(runs["eager"]["fused_adamw"]), "")
        results["runs"] = runs
        # several ranks: on every GPU there is (at least 1: DDP and FSDP2 wrap a model of one rank
        # too), on 2 processes on a CPU; the losses of the process alone are the reference
        ranks = max(1, torch.cuda.device_count()) if args.device.startswith("cuda") else 2
        reference = step_losses(Path(tmp) / f"{precision}-eager")
        tolerance = 2e-2 if precision == "bf16" else 1e-4
        for parallel in ("ddp", "fsdp"):
            r = run_ranks(args.device, precision, parallel, ranks, args.small, Path(tmp))
            results[f"{parallel}_{ranks}"] = r
            if "error" in r:
                report(f"{parallel} on {ranks} rank(s) under torchrun", False, str(r["error"]).splitlines()[-1])
                continue
            losses = r["losses"]
            assert isinstance(losses, list)
            gap = max(abs(a - b) / abs(b) for a, b in zip(losses, reference, strict=True))
            report(
                f"{parallel} on {ranks} rank(s) under torchrun trains as one process",
                bool(r["finished"]) and gap <= tolerance,
                f"largest relative loss gap {gap:.1e} (<= {tolerance:g}), {r['tokens_per_s']:,.0f} tokens/s",
            )
    (args.json or ROOT / "bench" / ("device_checks.json" if not args.small else "device_checks-small.json")).write_text(
        json.dumps(results, indent=2) + "\n"
    )
    print("\n".join(lines))
    return failures


if __name__ == "__main__":
    sys.exit(main())
