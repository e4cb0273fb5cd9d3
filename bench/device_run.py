"""The GPU evidence, as one command for one H100/H200 (about 15 minutes): what lagdsl's training
costs against a hand-written loop, what growing buys against training from scratch, and whether
the loss after a small lag ranks growth operators by their final loss.

    python bench/device_run.py                      # on a CUDA machine: writes bench/device_run.json
    python bench/device_run.py --device cpu --small # the script itself on a CPU, at toy size (a minute)

1. **Throughput and MFU.** A `gpt` of about 125 M parameters (width 768, 18 layers, context 1024,
   bytes) in bf16 with `compile on` and fused AdamW: tokens/s of `lagdsl run` (its steady state,
   from the step events) against a hand-written loop over the same model class, batches and
   optimizer (`torch.compile`, bf16 autocast, fused AdamW; nothing else). MFU = 6 x parameters x
   tokens/s (plus attention's 12 x layers x context x width per token) over the card's dense bf16
   peak, where the card is known.
2. **Growth against scratch.** The same number of steps, at the largest size that fits: scratch at
   the final shape against stacking from a third of the depth (growth early, at 10% and 25% of
   training, `rewarm`), each run's final val loss and training FLOPs.
3. **A lag study.** Five depth candidates (`copy_top`, `interleave`, `random`, `identity`, and
   `copy_top(noise=0.01)`; the depth doubles, where `stack` would build `copy_top`'s model), one
   seed, lags 0 to 10% of a shortened horizon: Spearman of the val loss at each lag against the
   final val loss, with the regret of the pick.
4. **Pretrained up-scaling.** `bench/upscaling.py` at GPU size (about 5 minutes by estimate): a
   Llama-shaped base of 124M parameters pretrained on prose (1,500 steps), exported and imported,
   up-scaled 12 -> 18 layers by five recipes (SOLAR-style layers, Yi-style middle duplication,
   LLaMA Pro whole and frozen, `copy_top`, `random`) for three seeds, healed on code: which recipe
   ends best, whether a short probe picks it, against scratch at equal compute, and what freezing
   keeps (the same tables as `bench/upscale_evidence.py` on the CPU; `--small`: its toy size).
5. **A probe's memory on the GPU.** A `gpt` of width 1024 grown 8 -> 16 layers (200 M parameters,
   bf16 autocast over fp32 weights, AdamW), once by `copy_top` and once by a probe of `copy_top`
   and `interleave`: the device's peak (`torch.cuda.max_memory_allocated`) in each phase against
   `lagdsl plan`'s. The probe's snapshot and its best candidate so far are parked in host memory,
   so the probe should peak where the plain run does (`probe_over_plain` near 1; it would be about
   1.5 with the best candidate kept on the device).
6. **Upcycling.** `bench/upcycle_evidence.py` at GPU size (a few minutes by estimate): a dense base
   (width 512, 8 layers) pretrained, exported and imported, made a mixture of 8 experts, top-2, by
   four recipes a probe compares, against granular upcycling and the dense model trained on at
   equal active FLOPs, three seeds (`--small`: its toy size).
7. **Context growth.** `bench/context_evidence.py` at GPU size: a base (width 512, 8 layers)
   pretrained at 512 positions, exported and imported, grown to 2,048 by six methods (`keep`, a
   10x base, PI, NTK-aware, YaRN, Llama 3.1's) for three seeds, against a model trained at 2,048 from
   the start at equal FLOPs (`--small`: its toy size).

Data: the built-in corpus (the standard library's source, as bytes); nothing downloads. Every part
writes into the JSON as it finishes, so a part that fails leaves the others; the exit code is the
number of failed parts.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lagdsl.lang import check_text  # noqa: E402
from lagdsl.lang.schedule import Schedule  # noqa: E402
from lagdsl.model import GPT, GPTConfig  # noqa: E402
from lagdsl.runtime.run.inputs import open_data  # noqa: E402
from lagdsl.runtime.run.start import RunOptions, execute, prepare  # noqa: E402
from lagdsl.runtime.training.engine import Device, make_optimizer  # noqa: E402

#: dense bf16 peak FLOP/s by card name (no sparsity), for MFU
PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}


def peak_flops(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((peak for key, peak in PEAKS.items() if key in name), None)


SIZES = {  # width, heads, depth, context, batch, steps (throughput), steps (growth), steps (study)
    # by estimate (no GPU has run it yet): 125 M at 16k tokens a step for throughput; growth and the
    # study at 85 M (width 768, 12 layers), 32k tokens a step, about 40 ms a step at 40% MFU
    "full": {"width": 768, "heads": 12, "depth": 18, "context": 1024, "batch": 16, "steps": 120,
             "grow_width": 768, "grow_heads": 12, "grow_depth": 12, "grow_steps": 2400, "grow_batch": 32,
             "grow_context": 1024, "study_steps": 1000},
    "small": {"width": 32, "heads": 2, "depth": 3, "context": 32, "batch": 4, "steps": 30,
              "grow_width": 32, "grow_heads": 2, "grow_depth": 4, "grow_steps": 60, "grow_batch": 4,
              "grow_context": 32, "study_steps": 80},
}  # fmt: skip

THROUGHPUT = """
schedule throughput
seed 0
device "{device}"
precision {precision}
compile {compile}
model gpt(context={context}, width={width}, heads={heads}, depth={depth})
batch {batch}
optimizer adamw(lr=6e-4)
lr cosine(warmup=10 steps, min=6e-5)
log every 10 steps
stage only {{ train {steps} steps }}
"""

#: what growth, scratch and the study share: their run's model at `model_depth` layers
HEAD = """
schedule {name}
seed {seed}
device "{device}"
precision {precision}
compile {compile}
model gpt(context={context}, width={width}, heads={heads}, depth={model_depth})
batch {batch}
optimizer adamw(lr={lr})
lr cosine(warmup={warmup} steps, min={lr_min})
eval every {eval} steps (batches=8)
log every 10 steps
"""
SCRATCH = HEAD + "stage only {{ train {steps} steps }}\n"
GROWN = (
    HEAD
    + """stage small {{ train {first} steps }}
stage middle {{ grow depth to {middle_depth} with copy_top  rewarm {warmup} steps  train {second} steps }}
stage full {{ grow depth to {depth} with copy_top  rewarm {warmup} steps  train {rest} steps }}
"""
)
STUDY = (
    HEAD
    + """stage base {{ train {first} steps }}
stage grown {{
  grow depth to {depth} {{
    candidates [copy_top, interleave, random, identity, copy_top(noise=0.01)]
    probe {probe} steps
  }}
  train {rest} steps
}}
"""
)


def checked(text: str, name: str) -> Schedule:
    result = check_text(text, str(ROOT / "schedules" / f"{name}.grow"))
    if result.schedule is None:
        raise ValueError(f"{name}: {[d.message for d in result.diagnostics]}")
    return result.schedule


def run(text: str, name: str, folder: Path) -> Path:
    schedule = checked(text, name)
    engine, run_dir = prepare(schedule, text, RunOptions(out=folder / name, quiet=True))
    execute(engine, run_dir)
    return run_dir


def events(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    found = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["event"] == kind:
            found.append(record)
    return found


def flops_per_token(config: GPTConfig, params: int) -> float:
    """Training FLOPs per token: 6 x parameters, plus attention's scores and mixing."""
    return 6 * params + 12 * config.depth * config.context * config.width


# -- 1. throughput


def throughput(device: str, precision: str, compile_on: bool, size: dict[str, int], folder: Path) -> dict[str, Any]:
    text = THROUGHPUT.format(
        device=device, precision=precision, compile="on" if compile_on else "off", context=size["context"],
        width=size["width"], heads=size["heads"], depth=size["depth"], batch=size["batch"], steps=size["steps"],
    )  # fmt: skip
    schedule = checked(text, "throughput")
    run_dir = run(text, "throughput", folder)
    steps = events(run_dir, "step")
    warm = [s for s in steps if s["step"] >= 20] or steps  # after compilation and the first steps
    tokens = warm[-1]["tokens"] - warm[0]["tokens"]
    seconds = warm[-1]["elapsed"] - warm[0]["elapsed"]
    ours = tokens / seconds if seconds > 0 else math.nan

    theirs, params = hand_written(schedule, device, compile_on, size)
    config = GPTConfig.from_schedule(schedule)
    name, peak = peak_flops(torch.device(device))
    per_token = flops_per_token(config, params)
    return {
        "card": name,
        "params": params,
        "tokens_per_step": schedule.tokens_per_step,
        "lagdsl_tokens_per_s": round(ours, 1),
        "hand_written_tokens_per_s": round(theirs, 1),
        "ratio": round(ours / theirs, 3) if theirs > 0 else None,
        "flops_per_token": per_token,
        "lagdsl_mfu": round(ours * per_token / peak, 4) if peak else None,
        "hand_written_mfu": round(theirs * per_token / peak, 4) if peak else None,
        "peak_flops": peak,
    }


def hand_written(schedule: Schedule, device: str, compile_on: bool, size: dict[str, int]) -> tuple[float, int]:
    """Tokens/s of the plainest loop over the same model, optimizer and batches."""
    dev = Device.resolve(device, schedule.precision)
    _, batches = open_data(schedule, ROOT / "schedules", dev, progress=False)
    model = GPT(GPTConfig.from_schedule(schedule))
    model.init_weights(torch.Generator().manual_seed(0))
    model.to(dev.device)
    optimizer = make_optimizer(schedule, model, dev.device)
    step_fn: Callable[..., Any] = torch.compile(model) if compile_on else model
    count = size["steps"]

    def one(step: int) -> None:
        inputs, targets = batches.train(step)
        with dev.autocast():
            _, loss = step_fn(inputs, targets)
        assert loss is not None
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for step in range(20):  # compilation and warm-up
        one(step)
    synchronize(dev.device)
    start = time.perf_counter()
    for step in range(20, count):
        one(step)
    synchronize(dev.device)
    seconds = time.perf_counter() - start
    return (count - 20) * schedule.tokens_per_step / seconds, model.num_params()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- 2. growth against scratch


def growth_vs_scratch(device: str, precision: str, compile_on: bool, size: dict[str, int], folder: Path) -> dict:
    steps = size["grow_steps"]
    depth = size["grow_depth"]
    common = {
        "seed": 0, "device": device, "precision": precision, "compile": "on" if compile_on else "off",
        "context": size["grow_context"], "width": size["grow_width"], "heads": size["grow_heads"],
        "batch": size["grow_batch"], "lr": "1e-3", "lr_min": "1e-4", "warmup": max(2, steps // 50),
        "eval": steps // 4, "depth": depth,
    }  # fmt: skip
    first, second = steps // 10, steps // 4 - steps // 10  # growths at 10% and 25% of training
    rows = {}
    for name, text in (
        ("scratch", SCRATCH.format(name="scratch", model_depth=depth, steps=steps, **common)),
        ("grown", GROWN.format(name="grown", model_depth=max(1, depth // 3), middle_depth=max(2, 2 * depth // 3),
                               first=first, second=second, rest=steps - first - second, **common)),
    ):  # fmt: skip
        started = time.perf_counter()
        run_dir = run(text, name, folder)
        summary = json.loads((run_dir / "summary.json").read_text())
        rows[name] = {
            "final_val_loss": summary["final_val_loss"],
            "flops": summary["flops"],
            "steps": summary["steps"],
            "seconds": round(time.perf_counter() - started, 1),
            "val_curve": [(e["step"], e["val_loss"]) for e in events(run_dir, "eval")],
        }
    rows["flops_ratio"] = round(rows["grown"]["flops"] / rows["scratch"]["flops"], 3)
    return rows


# -- 3. lag study


def lag_study(device: str, precision: str, compile_on: bool, size: dict[str, int], folder: Path) -> dict:
    from lagdsl.analysis.study import StudyOptions, run_study

    steps = size["study_steps"]
    depth = size["grow_depth"]
    first = steps // 4
    rest = steps - first
    probe = max(5, rest // 10)
    text = STUDY.format(
        seed=0, device=device, precision=precision, compile="on" if compile_on else "off",
        context=size["grow_context"], width=size["grow_width"], heads=size["grow_heads"], batch=size["grow_batch"],
        lr="1e-3", lr_min="1e-4", warmup=max(2, steps // 50), eval=steps, name="lag_study",
        model_depth=depth // 2, depth=depth,
        first=first, rest=rest, probe=probe,
    )  # fmt: skip
    schedule = checked(text, "lag_study")
    lags = tuple(sorted({0, max(1, rest // 40), max(2, rest // 20), probe}))
    study = run_study(schedule, StudyOptions(stage="grown", lags=lags, horizon="end"), folder / "study")
    return {
        "candidates": study.candidates,
        "lags": study.lags,
        "horizon_steps": study.horizon_steps,
        "spearman_val": [s.spearman.mean for s in study.summary.val],
        "regret_val": [s.regret.mean for s in study.summary.val],
        "final_val": {c.label: c.final_val for c in study.runs[0].candidates},
    }


# -- 4. pretrained up-scaling


def upscaling(device: str, precision: str, compile_on: bool, size: dict[str, int], folder: Path) -> dict:
    return _evidence("upscaling", device, precision, size, folder)


def _evidence(module: str, device: str, precision: str, size: dict[str, int], folder: Path) -> dict:
    """A CPU evidence benchmark's pipeline (`module`: its `SIZES`, `run`, `markdown`) at GPU size
    (`--small`: its toy size), with its tables."""
    import importlib

    sys.path.insert(0, str(ROOT / "bench"))
    study = importlib.import_module(module)
    sizes = dict(study.SIZES["toy" if size is SIZES["small"] else "gpu"], device=device, precision=precision)
    result = study.run(sizes, folder, say=lambda line: None)
    result["tables"] = study.markdown(result)
    return result


# -- 6. upcycling


def upcycling(device: str, precision: str, compile_on: bool, size: dict[str, int], folder: Path) -> dict:
    return _evidence("upcycle_evidence", device, precision, size, folder)


# -- 7. context growth


def context(device: str, precision: str, compile_on: bool, size: dict[str, int], folder: Path) -> dict:
    return _evidence("context_evidence", device, precision, size, folder)


# -- 5. a probe's device memory


MEMORY = (
    HEAD
    + "stage base {{ train {first} steps }}\nstage grown {{\n  grow depth to {depth} {grow}\n  train {rest} steps\n}}\n"
)
MEMORY_GROWTHS = {"plain": "with copy_top", "probe": "{{ candidates [copy_top, interleave] probe {probe} steps }}"}


def probe_memory(device: str, precision: str, compile_on: bool, size: dict[str, int], folder: Path) -> dict:
    """Each phase's device peak of a plain growth's run and a probe's, and the plan's (one process)."""
    from contextlib import contextmanager

    from lagdsl.plan import build_plan
    from lagdsl.runtime.training import engine as engine_module

    cuda = device.startswith("cuda")
    full = size is SIZES["full"]
    shape = {"width": 1024, "heads": 16, "depth": 16, "model_depth": 8, "context": 1024, "batch": 8} if full else {
        "width": 32, "heads": 2, "depth": 4, "model_depth": 2, "context": 32, "batch": 4}  # fmt: skip
    original = engine_module.Engine._timed
    peaks: dict[str, dict[str, int]] = {}
    sys.path.insert(0, str(ROOT / "bench"))
    from common import NestedPeaks

    tracked = NestedPeaks(torch.cuda.max_memory_allocated, torch.cuda.reset_peak_memory_stats) if cuda else None

    @contextmanager
    def timed(self: Any, name: str) -> Any:  # a phase's peak, its nested phases' included
        if tracked is not None:
            torch.cuda.synchronize()
            tracked.enter()
        try:
            with original(self, name):
                yield
        finally:
            if tracked is not None:
                torch.cuda.synchronize()
                phases = peaks.setdefault(label, {})
                phases[name] = max(phases.get(name, 0), tracked.leave())

    result: dict[str, Any] = {"params": None, "runs": {}, "plan": {}}
    engine_module.Engine._timed = timed  # type: ignore[method-assign,assignment]
    try:
        for label, grow in MEMORY_GROWTHS.items():
            text = MEMORY.format(name=f"memory_{label}", seed=0, device=device, precision=precision,
                                 compile="on" if compile_on else "off", lr=3e-4, lr_min=3e-5, warmup=2,
                                 eval=1000, first=3, rest=3, grow=grow.format(probe=2), **shape)  # fmt: skip
            run(text, f"memory_{label}", folder)
            result["runs"][label] = peaks.get(label, {})
            plan = build_plan(checked(text, f"memory_{label}"), 1)
            result["plan"][label] = {
                k: max(s.phases.get(k, 0) for s in plan.stages) for k in ("train", "growth", "probe")
            }
            result["params"] = plan.stages[-1].shape.params
    finally:
        engine_module.Engine._timed = original  # type: ignore[method-assign]
    plain, probe = result["runs"]["plain"], result["runs"]["probe"]
    if cuda:
        result["probe_over_plain"] = probe["probes"] / max(plain.values())
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="Toy sizes: checks the script itself.")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "device_run.json")
    parser.add_argument("--parts", default="throughput,growth,study,upscaling,memory,upcycling,context")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("no CUDA device here: run with --device cpu --small to check the script", file=sys.stderr)
        return 2
    size = SIZES["small" if args.small else "full"]
    precision, compile_on = ("bf16", True) if cuda else ("fp32", False)
    result: dict[str, Any] = {
        "machine": platform.machine(),
        "torch": torch.__version__,
        "device": peak_flops(torch.device(args.device))[0],
        "precision": precision,
        "compile": compile_on,
        "small": args.small,
    }
    parts = {"throughput": throughput, "growth": growth_vs_scratch, "study": lag_study, "upscaling": upscaling,
             "memory": probe_memory, "upcycling": upcycling, "context": context}  # fmt: skip
    failures = 0
    with tempfile.TemporaryDirectory() as folder:
        for name in args.parts.split(","):
            started = time.perf_counter()
            try:
                result[name] = parts[name](args.device, precision, compile_on, size, Path(folder) / name)
                result[name]["part_seconds"] = round(time.perf_counter() - started, 1)
                print(f"PASS {name} ({time.perf_counter() - started:.0f} s): {json.dumps(result[name])[:400]}")
            except Exception as error:  # one part failing leaves the others
                failures += 1
                result[name] = {"error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()[-2000:]}
                print(f"FAIL {name}: {type(error).__name__}: {error}")
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    return failures


if __name__ == "__main__":
    sys.exit(main())
