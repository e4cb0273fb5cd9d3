"""Pretrained up-scaling measured through the pipeline users run: what `bench/upscale_evidence.py`
runs on the CPU and part 4 of `bench/device_run.py` on a GPU, at the sizes of `SIZES`.

1. **A base.** `lagdsl run` pretrains a `gpt` (grouped-query attention, an untied head: a Llama) on
   prose, the English docstrings of the standard library; `lagdsl export` writes it as a Hugging
   Face Llama folder. Every later run imports that folder (`model pretrained(...)`), as a user
   up-scaling a published checkpoint does.
2. **The recipes, healed on code** (the standard library's source without its docstrings), from the
   base's depth d to 1.5 d: a SOLAR-style layer list (two copies of the stack, d/4 layers cut at the
   seam), Yi-style middle duplication (the layers from 3d/8 on repeated once, half the depth), LLaMA
   Pro (identity blocks inserted; trained whole, and with the old blocks frozen), `copy_top`, `midas`,
   `interleave` and `random`. `lagdsl study` trains each from the same imported model on the same
   batches for `heal` steps, for `seeds` seeds (data order and noise; the base fixed), recording the
   val loss at the lags; the frozen LLaMA Pro is a second study of the same schedule with `freeze
   old`, joined seed by seed. Reported with the study's statistics: Spearman's rho of the val loss
   at each lag against the final val loss (bootstrap interval over seeds and recipes), the paired
   sign-flip test of rho at the lag > rho at lag 0, the regret of picking by each lag, and each
   recipe's final val loss (mean, 95% bootstrap interval over seeds).
3. **Against scratch at equal compute.** The up-scaled model's shape trained from scratch on the same
   code (`scratch_seeds` seeds), its val loss against training FLOPs. At two budgets (the first
   `budget_lag` heal steps, and the whole heal) the best recipe's val loss against scratch's at the
   same FLOPs counted two ways: the base's pretraining as a sunk cost (the practitioner's case) and
   included (the researcher's); and the FLOPs scratch needs to reach the recipe's final loss
   (interpolated on its curve). Differences with 95% bootstrap intervals over both groups' seeds.
4. **Freeze or not.** LLaMA Pro healed with the old blocks frozen against the same expansion trained
   whole (`lagdsl run`, each seed), each final model's loss on the base's own held-out prose and on
   held-out code, beside the base's.

Everything is written under a work folder (kept for a second look); the result is a JSON-able dict,
and `markdown` makes the tables.
"""

from __future__ import annotations

import ast
import json
import math
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT, ROOT / "bench"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from common import interval, lag_cells, lag_rows, measured  # noqa: E402

SIZES: dict[str, dict[str, Any]] = {
    # two cores: about an hour (`bench/upscale_evidence.py`)
    "cpu": {
        "width": 128, "heads": 4, "kv_heads": 2, "depth": 8, "context": 128, "batch": 8,
        "base_steps": 1000, "base_lr": 3e-3, "heal": 200, "heal_lr": 1e-3, "probe": 10, "lags": [0, 2, 5, 10, 25],
        "eval_batches": 8, "eval_every": 25, "seeds": 5, "scratch_seeds": 3, "budget_lag": 25,
        "prose_bytes": 6_000_000, "code_bytes": 6_000_000, "device": "cpu", "precision": "fp32",
    },
    # one H100/H200, by estimate (no GPU has run it yet): a base of 124M parameters (width 768, 12
    # layers, context 512, 16 rows a step: 8k tokens) pretrained 1,500 steps (12M tokens: the 2.2 MB
    # of docstrings about five times over), up-scaled to 18 layers by five recipes and the frozen
    # LLaMA Pro, three seeds, 200 heal steps; at 40% MFU about 0.02 s a step: 5 minutes in all
    "gpu": {
        "width": 768, "heads": 12, "kv_heads": 4, "depth": 12, "context": 512, "batch": 16,
        "base_steps": 1500, "base_lr": 1e-3, "heal": 200, "heal_lr": 3e-4, "probe": 10, "lags": [0, 2, 5, 10, 25],
        "eval_batches": 8, "eval_every": 25, "seeds": 3, "scratch_seeds": 2, "budget_lag": 25,
        "prose_bytes": 20_000_000, "code_bytes": 20_000_000, "device": "cuda", "precision": "bf16",
        "recipes": ["solar", "yi", "llama_pro", "copy_top", "random"],
    },
    # the script itself, in the test suite: seconds
    "toy": {
        "width": 16, "heads": 2, "kv_heads": 1, "depth": 4, "context": 16, "batch": 4,
        "base_steps": 20, "base_lr": 3e-3, "heal": 12, "heal_lr": 1e-3, "probe": 2, "lags": [0, 2, 5],
        "eval_batches": 2, "eval_every": 4, "seeds": 2, "scratch_seeds": 2, "budget_lag": 5,
        "prose_bytes": 200_000, "code_bytes": 200_000, "device": "cpu", "precision": "fp32",
        "recipes": ["solar", "yi", "llama_pro", "copy_top"],
    },
}  # fmt: skip

RECIPES = ["solar", "yi", "llama_pro", "copy_top", "midas", "interleave", "random"]
NAMES = {"solar": "SOLAR-style", "yi": "Yi-style", "llama_pro": "LLaMA Pro"}  # how the tables call them
FROZEN = "llama_pro (old frozen)"

HEAD = """\
schedule {name}
seed 1
device "{device}"
precision {precision}
{model}
data text("{data}/*.txt", val=0.05)
batch {batch}
optimizer adamw(lr={lr}, weight_decay=0.1)
lr cosine(warmup=10 steps, min={lr_min})
eval every {eval_every} steps (batches={eval_batches})
log every 10 steps
"""


def recipe(name: str, d: int) -> str:
    """The operator expression of a recipe growing d layers to 1.5 d."""
    grown = d * 3 // 2
    if name == "solar":  # two copies of the stack, m layers cut at the seam: [0, d - m) + [m, d)
        m = d - grown // 2
        return f"layers([[0, {d - m}], [{m}, {d}]])"
    if name == "yi":  # the layers [b, a) repeated once, in place: [0, a) + [b, a) + [a, d)
        b = round(3 * d / 8)
        a = b + (grown - d)
        return f"layers([[0, {a}], [{b}, {a}]{f', [{a}, {d}]' if a < d else ''}])"
    return name


def _docstrings(tree: ast.Module, lines: list[str]) -> list[tuple[str, range | None]]:
    """Each docstring of a module, and the lines it stands on alone (None: it shares a line)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str) and first.end_lineno is not None
            ):  # fmt: skip
                alone = (
                    not lines[first.lineno - 1][: first.col_offset].strip()
                    and not lines[first.end_lineno - 1][first.end_col_offset or 0 :].strip()
                )
                found.append((first.value.value, range(first.lineno, first.end_lineno + 1) if alone else None))
    return found


def write_corpora(work: Path, prose_bytes: int, code_bytes: int) -> dict[str, int]:
    """Two corpora from the running Python's standard library: `prose/` (its docstrings, cleaned of
    indentation) and `code/` (its source with the docstrings taken out), about the given sizes."""
    import inspect

    from lagdsl.runtime.data.corpus import stdlib_files

    sizes = {"prose": 0, "code": 0}
    limits = {"prose": prose_bytes, "code": code_bytes}
    parts: dict[str, list[str]] = {"prose": [], "code": []}
    for path in stdlib_files():
        if all(sizes[k] >= limits[k] for k in sizes):
            break
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = source.splitlines(keepends=True)
        docstrings = _docstrings(tree, lines)
        if sizes["prose"] < limits["prose"]:
            for text, _ in docstrings:
                if len(text) > 40:
                    cleaned = inspect.cleandoc(text) + "\n\n"
                    parts["prose"].append(cleaned)
                    sizes["prose"] += len(cleaned)
        if sizes["code"] < limits["code"]:
            dropped = {number for _, span in docstrings if span is not None for number in span}
            code = "".join(line for number, line in enumerate(lines, 1) if number not in dropped)
            parts["code"].append(code)
            sizes["code"] += len(code)
    for kind, texts in parts.items():
        folder = work / kind
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(0, len(texts), 200):  # files of 200 pieces
            (folder / f"{index // 200:04d}.txt").write_text("".join(texts[index : index + 200]), encoding="utf-8")
    return sizes


def lagdsl(work: Path, *args: str) -> None:
    """`lagdsl ARGS` run in this process from `work`, its output kept in `work/log.txt`; a failure
    stops the benchmark."""
    import os

    from click.testing import CliRunner

    from lagdsl.cli import main

    here = os.getcwd()
    os.chdir(work)
    try:
        result = CliRunner().invoke(main, list(args))
    finally:
        os.chdir(here)
    with open(work / "log.txt", "a", encoding="utf-8") as log:
        log.write(f"$ lagdsl {' '.join(args)}\n{result.output}")
    if result.exit_code != 0:
        raise RuntimeError(f"`lagdsl {' '.join(args)}` failed ({result.exit_code}):\n{result.output[-3000:]}")


def _model(size: dict[str, Any], depth: int) -> str:
    return (
        f"model gpt(context={size['context']}, width={size['width']}, heads={size['heads']}, "
        f"kv_heads={size['kv_heads']}, depth={depth}, tie=false)"
    )


def _head(size: dict[str, Any], name: str, model: str, data: str, lr: float) -> str:
    return HEAD.format(
        name=name, device=size["device"], precision=size["precision"], model=model, data=data, batch=size["batch"],
        lr=lr, lr_min=lr / 10, eval_every=size["eval_every"], eval_batches=size["eval_batches"],
    )  # fmt: skip


def schedules(size: dict[str, Any]) -> dict[str, str]:
    """The benchmark's schedules, by file name."""
    d, heal, probe = size["depth"], size["heal"], size["probe"]
    grown = d * 3 // 2
    imported = f'model pretrained("base", context={size["context"]})'
    names = size.get("recipes", RECIPES)
    candidates = ", ".join(recipe(name, d) for name in names)

    def upscale(candidates: str, freeze: str) -> str:
        return _head(size, "upscale", imported, "code", size["heal_lr"]) + (
            f"stage up {{\n  grow depth to {grown} {{ candidates [{candidates}] probe {probe} steps }}\n"
            f"  train {heal} steps{freeze}\n}}\n"
        )

    frozen = " { freeze old }"
    return {
        "base.grow": _head(size, "base", _model(size, d), "prose", size["base_lr"])
        + f"stage base {{ train {size['base_steps']} steps }}\n",
        "upscale.grow": upscale(candidates, ""),
        "frozen.grow": upscale("llama_pro", frozen),
        "scratch.grow": _head(size, "scratch", _model(size, grown), "code", size["base_lr"])
        + f"stage only {{ train {scratch_steps(size)} steps }}\n",
        "llama_pro.grow": _head(size, "llama_pro", imported, "code", size["heal_lr"])
        + f"stage up {{ grow depth to {grown} with llama_pro  train {heal} steps }}\n",
        "llama_pro_frozen.grow": _head(size, "llama_pro_frozen", imported, "code", size["heal_lr"])
        + f"stage up {{ grow depth to {grown} with llama_pro  train {heal} steps{frozen} }}\n",
    }


def scratch_steps(size: dict[str, Any]) -> int:
    """Scratch trains long enough to pass the largest budget counted with the base's pretraining:
    the heal plus the base's steps at 2/3 of the cost (d layers, not 1.5 d), and a third more."""
    return int((size["heal"] + size["base_steps"] * 2 / 3) * 4 / 3)


# -- the measurements


def run(size: dict[str, Any], work: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Everything of the module's docstring, at `size`, under `work`: measured, then analysed."""
    return measured(measure, analyse, size, work, say)


def step_flops(work: Path, name: str, stage: int = -1) -> float:
    """Training FLOPs of one step of stage `stage` of the schedule file `name` in `work` (after its growths)."""
    from lagdsl.lang import check_text
    from lagdsl.plan.cost import CostModel

    schedule = check_text((work / name).read_text(), str(work / name)).schedule
    assert schedule is not None
    return CostModel(schedule).step_flops(schedule.stages[stage].after, 1)


def measure(size: dict[str, Any], work: Path, say: Callable[[str], None] = print) -> None:
    """The runs: the base, its export, both studies, scratch and the two LLaMA Pro heals."""
    work.mkdir(parents=True, exist_ok=True)
    corpora = write_corpora(work, size["prose_bytes"], size["code_bytes"])
    for name, text in schedules(size).items():
        (work / name).write_text(text)
    say(f"corpora: {corpora['prose']:,} bytes of prose, {corpora['code']:,} of code; pretraining the base")
    lagdsl(work, "run", "base.grow", "--out", "base-run", "--quiet")
    lagdsl(work, "export", "base-run", "-o", "base", "--force")
    lags = ",".join(str(lag) for lag in size["lags"])
    seeds = str(size["seeds"])
    say("the recipes' study")
    for name, folder in (("upscale.grow", "study"), ("frozen.grow", "study-frozen")):
        lagdsl(work, "study", name, "--stage", "up", "--lags", lags, "--seeds", seeds, "--seed", "1",
               "-o", folder, "--quiet")  # fmt: skip
    say("scratch")
    for seed in range(1, size["scratch_seeds"] + 1):
        lagdsl(work, "run", "scratch.grow", "--out", f"scratch-{seed}", "--seed", str(seed), "--quiet")
    say("freeze or not")
    for name in ("llama_pro", "llama_pro_frozen"):
        for seed in range(1, size["seeds"] + 1):
            lagdsl(work, "run", f"{name}.grow", "--out", f"{name}-{seed}", "--seed", str(seed), "--quiet")


def analyse(size: dict[str, Any], work: Path) -> dict[str, Any]:
    """The figures of what `measure` left under `work` (the held-out losses evaluated here)."""
    from lagdsl.analysis.study import recompute
    from lagdsl.artifacts import Study, read_json

    whole = read_json(work / "study" / "study.json", Study)
    frozen = read_json(work / "study-frozen" / "study.json", Study)
    study = recompute(joined(whole, frozen, size))
    scratch = [curve(work / f"scratch-{seed}") for seed in range(1, size["scratch_seeds"] + 1)]
    scorers = held_out_scorers(work, size)
    kept = {
        name: [held_out(work / f"{name}-{seed}", scorers, size) for seed in range(1, size["seeds"] + 1)]
        for name in ("llama_pro", "llama_pro_frozen")
    }
    kept["base"] = [held_out(work / "base-run", scorers, size)]
    base = json.loads((work / "base-run" / "summary.json").read_text())
    seconds = work / "seconds.txt"
    return {
        "size": size,
        "corpora_bytes": {
            kind: sum(f.stat().st_size for f in (work / kind).glob("*.txt")) for kind in ("prose", "code")
        },
        "params": {"base": base["params"], "grown": study_params(work)},
        "base": {"steps": base["steps"], "flops": base["mainline_flops"], "final_val": base["final_val_loss"]},
        "recipes": {name: recipe(name, size["depth"]) for name in size.get("recipes", RECIPES)},
        "names": {
            **{recipe(name, size["depth"]): NAMES.get(name, name) for name in size.get("recipes", RECIPES)},
            FROZEN: FROZEN,
        },
        "study": [{**row, "picks": picks(study, i)} for i, row in enumerate(lag_rows(study))],
        "horizon_steps": study.horizon_steps,
        "final_val": final_losses(study),
        "scratch": against_scratch(study, scratch, base["mainline_flops"], size),
        "freeze": freeze_table(kept),
        "wall_seconds": int(seconds.read_text()) if seconds.exists() else None,
    }


def picks(study: Any, index: int) -> dict[str, int]:
    """How many seeds pick each recipe by the val loss at lag `study.lags[index]`."""
    counts: dict[str, int] = {}
    for run in study.runs:
        pick = run.stats["val"][index].pick
        if pick is not None:
            label = run.candidates[pick].label
            counts[label] = counts.get(label, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def joined(whole: Any, frozen: Any, size: dict[str, Any]) -> Any:
    """One study of the recipes: the frozen LLaMA Pro's runs added to the others, seed by seed."""
    runs = []
    for mine, theirs in zip(whole.runs, frozen.runs, strict=True):
        assert mine.seed == theirs.seed
        (alone,) = theirs.candidates
        candidates = [*mine.candidates, alone.model_copy(update={"label": FROZEN})]
        runs.append(mine.model_copy(update={"candidates": candidates}))
    return whole.model_copy(update={"runs": runs, "candidates": [*whole.candidates, FROZEN]})


def study_params(work: Path) -> int:
    summary = json.loads((work / "llama_pro-1" / "summary.json").read_text())
    return int(summary["params"])


def curve(run_dir: Path) -> dict[str, Any]:
    """A run's val loss against its training FLOPs (each evaluation, at the FLOPs of its step)."""
    from lagdsl.runtime.records.metrics import read

    records = read(run_dir / "metrics.jsonl")
    summary = json.loads((run_dir / "summary.json").read_text())
    per_step = summary["mainline_flops"] / summary["steps"]
    evals = [(r["step"], r["val_loss"]) for r in records if r["event"] == "eval"]
    return {"flops": [step * per_step for step, _ in evals], "val": [loss for _, loss in evals], "per_step": per_step}


def at_flops(points: dict[str, Any], flops: float) -> float | None:
    """The val loss at `flops`, interpolated linearly between evaluations (None beyond the curve)."""
    xs, ys = points["flops"], points["val"]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys, strict=True), zip(xs[1:], ys[1:], strict=True), strict=False):
        if x0 <= flops <= x1:
            return y0 + (y1 - y0) * (flops - x0) / (x1 - x0) if x1 > x0 else y1
    return None


def flops_to_reach(points: dict[str, Any], loss: float) -> float | None:
    """The FLOPs at which the curve first reaches `loss` (interpolated; None: never)."""
    xs, ys = points["flops"], points["val"]
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if y <= loss:
            if i == 0:
                return x
            return xs[i - 1] + (x - xs[i - 1]) * (ys[i - 1] - loss) / (ys[i - 1] - y)
    return None


def mean_interval(values: Sequence[float | None], resamples: int = 2000, seed: int = 0) -> dict[str, float | None]:
    """Mean and 95% percentile bootstrap interval of a mean over seeds."""
    known = [v for v in values if v is not None and not math.isnan(v)]
    if not known:
        return {"mean": None, "low": None, "high": None, "n": 0}
    draw = random.Random(seed)
    means = sorted(sum(draw.choice(known) for _ in known) / len(known) for _ in range(resamples))
    return {
        "mean": sum(known) / len(known), "low": means[int(0.025 * resamples)],
        "high": means[int(0.975 * resamples) - 1], "n": len(known),
    }  # fmt: skip


def difference_interval(
    first: Sequence[float], second: Sequence[float], resamples: int = 2000, seed: int = 0
) -> dict[str, float | None]:
    """Mean of `first` minus mean of `second` (independent groups of seeds), with a 95% percentile
    bootstrap interval resampling each group."""
    if not first or not second:
        return {"mean": None, "low": None, "high": None}
    draw = random.Random(seed)

    def mean(values: Sequence[float]) -> float:
        return sum(values) / len(values)

    samples = sorted(
        mean([draw.choice(first) for _ in first]) - mean([draw.choice(second) for _ in second])
        for _ in range(resamples)
    )
    return {"mean": mean(first) - mean(second), "low": samples[int(0.025 * resamples)],
            "high": samples[int(0.975 * resamples) - 1]}  # fmt: skip


def final_losses(study: Any) -> dict[str, dict[str, Any]]:
    """Each recipe's final val loss over seeds (mean, interval), its val loss at every lag (means),
    the seeds it ended best, and its final loss minus the best recipe's, seed by seed (the recipes
    of a seed share its batches, so the paired difference is what tells them apart)."""

    def finals_of(label: str) -> list[float]:
        return [next(c.final_val for c in run.candidates if c.label == label) for run in study.runs]

    means = {label: sum(finals_of(label)) / len(study.runs) for label in study.candidates}
    best = min(means, key=lambda label: means[label])
    out = {}
    for label in study.candidates:
        finals = finals_of(label)
        at_lags = [[next(c for c in run.candidates if c.label == label).val[i] for run in study.runs]
                   for i in range(len(study.lags))]  # fmt: skip
        out[label] = {
            **mean_interval(finals), "seeds": finals,
            "at_lag": {str(lag): sum(v) / len(v) for lag, v in zip(study.lags, at_lags, strict=True)},
            "wins": sum(1 for run in study.runs if run.best == label),
            "minus_best": mean_interval([a - b for a, b in zip(finals, finals_of(best), strict=True)]),
        }  # fmt: skip
    return out


def against_scratch(
    study: Any, scratch: list[dict[str, Any]], base_flops: float, size: dict[str, Any]
) -> dict[str, Any]:
    """The best recipe (lowest mean final val loss) against scratch at two budgets, counted two ways."""
    finals = final_losses(study)
    best = min(finals, key=lambda label: finals[label]["mean"])
    per_step = scratch[0]["per_step"]  # the up-scaled shape's step: scratch trains the same shape
    lag = size["budget_lag"]
    index = study.lags.index(lag)
    budgets = {f"{lag} heal steps": (lag, index), f"{study.horizon_steps} heal steps (the whole heal)": (None, None)}
    out: dict[str, Any] = {"recipe": best, "budgets": {}}
    for name, (steps, i) in budgets.items():
        grown = [next(c for c in run.candidates if c.label == best) for run in study.runs]
        losses = [c.final_val if i is None else c.val[i] for c in grown]
        heal = (steps if steps is not None else study.horizon_steps) * per_step
        row: dict[str, Any] = {"heal_flops": heal, "upscaled": mean_interval(losses)}
        for way, flops in (("sunk", heal), ("included", heal + base_flops)):
            at = [at_flops(points, flops) for points in scratch]
            known = [v for v in at if v is not None]
            row[way] = {
                "flops": flops, "scratch": mean_interval(known),
                "scratch_minus_upscaled": difference_interval(known, losses) if len(known) == len(at) else None,
            }  # fmt: skip
        reach = [flops_to_reach(points, sum(losses) / len(losses)) for points in scratch]
        row["scratch_flops_to_reach"] = {
            "seeds": reach, **(mean_interval([r for r in reach if r is not None]) if all(reach) else {}),
            "beyond": max(points["flops"][-1] for points in scratch) if not all(reach) else None,
        }  # fmt: skip
        out["budgets"][name] = row
    return out


def held_out_scorers(work: Path, size: dict[str, Any]) -> dict[str, Any]:
    """An evaluator of the held-out prose and one of the held-out code (`lagdsl.runtime.training.evaluation`:
    the mean loss over fixed validation batches, four times the schedules' `eval` batches)."""
    from contextlib import nullcontext

    import torch

    from lagdsl.lang.schedule import TextData
    from lagdsl.runtime.data.batches import Batches
    from lagdsl.runtime.data.corpus import load_corpus
    from lagdsl.runtime.distributed.world import World
    from lagdsl.runtime.training.evaluation import Evaluator

    device = torch.device(size["device"])
    scorers = {}
    for kind in ("prose", "code"):
        corpus = load_corpus(TextData(glob=f"{kind}/*.txt", val=0.05), work, progress=False)
        batches = Batches(corpus, size["batch"], size["context"], 0, device)
        scorers[kind] = Evaluator(batches, device, nullcontext, World(), size["eval_batches"] * 4)
    return scorers


def held_out(run_dir: Path, scorers: dict[str, Any], size: dict[str, Any]) -> dict[str, float]:
    """A run's final model's mean loss on the held-out prose and the held-out code."""
    from lagdsl.runtime.state.trained import open_trained

    model = open_trained(run_dir).model(size["device"])
    return {kind: scorer.evaluate(model) for kind, scorer in scorers.items()}


def freeze_table(kept: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, rows in kept.items():
        out[name] = {kind: {**mean_interval([r[kind] for r in rows]), "seeds": [r[kind] for r in rows]}
                     for kind in ("prose", "code")}  # fmt: skip
    for kind in ("prose", "code"):
        frozen = [r[kind] for r in kept["llama_pro_frozen"]]
        whole = [r[kind] for r in kept["llama_pro"]]
        out[f"frozen_minus_whole_{kind}"] = difference_interval(frozen, whole)
    return out


# -- the tables


def ci(d: dict[str, Any] | None, digits: int = 3) -> str:
    """`[low, high]` of an interval, three digits unless told."""
    return interval(d, digits)


def _mean(d: dict[str, Any] | None, digits: int = 3, sign: bool = False) -> str:
    if not d or d.get("mean") is None:
        return "n/a"
    return f"{d['mean']:{'+' if sign else ''}.{digits}f}"


def _flops(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _called(r: dict[str, Any], label: str) -> str:
    """A recipe as the tables call it: its name, and the operator where that is not the name."""
    if label == FROZEN:
        return "LLaMA Pro, old frozen"
    name = r["names"].get(label, label)
    return name if name == label else f"{name} (`{label}`)"


def verdicts(r: dict[str, Any], significance: float = 0.05) -> dict[str, str]:
    """The answers in plain words, from the figures (whatever they are)."""
    finals = r["final_val"]
    ordered = sorted(finals, key=lambda label: finals[label]["mean"])
    best, second = ordered[0], ordered[1]
    lead = finals[second]["minus_best"]
    separated = lead["low"] is not None and lead["low"] > 0
    rows = {row["lag"]: row for row in r["study"]}
    lag = max(lag for lag in rows if lag > 0)
    tests = {k: row["above_lag0"] for k, row in rows.items() if row["above_lag0"]}
    significant = [k for k, t in tests.items() if t["p_value"] is not None and t["p_value"] < significance
                   and (t["low"] or 0) > 0]  # fmt: skip
    zero = rows[0]["rho"]["mean"]
    probe = (
        f"the loss after a lag of {', '.join(map(str, significant))} steps ranks the recipes better than the loss "
        f"at growth, seed by seed (p < {significance})"
        if significant
        else f"no lag ranks the recipes better than the loss at growth (rho at growth {zero:.2f}; at {lag} "
        f"steps {rows[lag]['rho']['mean']:.2f}; no paired test below p = {significance})"
    )
    whole = r["scratch"]["budgets"]
    last = list(whole.values())[-1]
    sunk, included = last["sunk"]["scratch_minus_upscaled"], last["included"]["scratch_minus_upscaled"]

    def ahead(d: dict[str, Any] | None) -> str:
        if not d or d.get("mean") is None:
            return "not measured (scratch's curve does not reach that budget)"
        where = "below" if d["mean"] > 0 else "above"
        sure = d["low"] > 0 or d["high"] < 0
        return f"{abs(d['mean']):.3f} nats {where} scratch ({'interval excludes 0' if sure else 'interval includes 0'})"

    freeze = r["freeze"]
    prose, code = freeze["frozen_minus_whole_prose"], freeze["frozen_minus_whole_code"]
    return {
        "recipe": f"{_called(r, best)} ends best ({finals[best]['mean']:.3f}); the next, {_called(r, second)}, ends "
        f"{lead['mean']:.4f} {ci(lead, 4)} behind it seed by seed, "
        + ("an interval clear of 0" if separated else "an interval that includes 0: not told apart"),
        "probe": probe,
        "scratch": f"after the whole heal {_called(r, r['scratch']['recipe'])} is {ahead(sunk)} with the base as a "
        "sunk cost, "
        f"and {ahead(included)} counting the base's pretraining",
        "freeze": f"freezing the old blocks changes the held-out prose loss by {prose['mean']:+.3f} "
        f"{ci(prose)} and the code loss by {code['mean']:+.3f} {ci(code)} against training the expansion whole",
    }


def markdown(r: dict[str, Any]) -> str:
    size, seeds = r["size"], r["size"]["seeds"]
    d = size["depth"]
    lines = [
        f"A base of {r['params']['base'] / 1e6:.2f}M parameters (width {size['width']}, {d} layers, "
        f"{size['heads']} heads, {size['kv_heads']} key-value heads, untied head, context {size['context']}, bytes) "
        f"pretrained {r['base']['steps']} steps on prose (the standard library's docstrings, val loss "
        f"{r['base']['final_val']:.3f}), exported to a Llama folder and imported; each recipe grows it to "
        f"{d * 3 // 2} layers ({r['params']['grown'] / 1e6:.2f}M) and heals {r['horizon_steps']} steps on code "
        f"(the standard library without its docstrings); {seeds} seeds.",
        "",
        "**Which recipe ends best** (val loss on code: at growth, and after the heal, mean and 95% interval "
        "over seeds; minus the best: the final loss less the best recipe's, seed by seed, which share their "
        "batches; wins: seeds it ended best):",
        "",
        "| recipe | operator | val at growth | final val | 95% CI | minus the best [95% CI] | wins |",
        "|---|---|---:|---:|---|---|---:|",
    ]
    for label, f in sorted(r["final_val"].items(), key=lambda item: item[1]["mean"]):
        operator = "`llama_pro`, `freeze old`" if label == FROZEN else f"`{label}`"
        name = "LLaMA Pro, old frozen" if label == FROZEN else r["names"].get(label, label)
        lead = f["minus_best"]
        behind = "(the best)" if lead["mean"] == 0 and lead["high"] == 0 else f"{lead['mean']:+.4f} {ci(lead, 4)}"
        lines.append(f"| {name} | {operator} | {f['at_lag']['0']:.3f} | {f['mean']:.3f} | {ci(f)} | {behind} | "
                     f"{f['wins']}/{seeds} |")  # fmt: skip
    lines += [
        "",
        "**Can a short probe tell?** rho: Spearman between the val loss at the lag and the final val loss (mean ± sd "
        "over seeds, 95% bootstrap interval over seeds and recipes); p: one-sided sign-flip test over seeds of rho "
        "at the lag > rho at lag 0; regret: the final val loss of the pick minus the best's.",
        "",
        "| lag (steps) | rho | rho 95% CI | rho - rho(lag 0) [95% CI] | p | regret | regret 95% CI | picks (seeds) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in r["study"]:
        chosen = ", ".join(f"{_called(r, label)} {n}" for label, n in row["picks"].items())
        lines.append("| " + " | ".join([str(row["lag"]), *lag_cells(row), chosen]) + " |")
    scratch = r["scratch"]
    lines += [
        "",
        f"**Against scratch at equal compute**: {_called(r, scratch['recipe'])} (the best recipe) against its shape "
        f"trained from scratch on the same code ({size['scratch_seeds']} seeds, the base's LR), val loss at the same "
        f"training FLOPs; the base's pretraining ({_flops(r['base']['flops'])} FLOPs) sunk or included. "
        "Difference: scratch minus up-scaled (positive: up-scaling is ahead).",
        "",
        "| budget | up-scaled | FLOPs (sunk) | scratch | difference [95% CI] | FLOPs (included) | scratch | "
        "difference [95% CI] |",
        "|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for name, row in scratch["budgets"].items():
        cells = [name, _mean(row["upscaled"])]
        for way in ("sunk", "included"):
            w = row[way]
            diff = w["scratch_minus_upscaled"]
            cells += [_flops(w["flops"]), _mean(w["scratch"]),
                      f"{_mean(diff, sign=True)} {ci(diff)}" if diff else "beyond scratch's run"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    for name, row in scratch["budgets"].items():
        reach = row["scratch_flops_to_reach"]
        told = (f"reaches it at {_flops(reach['mean'])} FLOPs" if reach.get("mean")
                else f"does not reach it within its {_flops(reach['beyond'])} FLOPs")  # fmt: skip
        total = row["heal_flops"] + r["base"]["flops"]
        lines.append(f"\nThe up-scaled loss after {name} ({_mean(row['upscaled'])}): scratch {told} (the heal "
                     f"took {_flops(row['heal_flops'])}; with the base {_flops(total)}).")  # fmt: skip
    freeze = r["freeze"]
    lines += [
        "",
        "**Freeze or not** (LLaMA Pro's expansion healed on code with the old blocks frozen, or whole; held-out "
        "loss, mean and 95% interval over seeds):",
        "",
        "| model | prose (the base's data) | code (the heal's) |",
        "|---|---|---|",
    ]
    for name, label in (("base", "the base"), ("llama_pro_frozen", "LLaMA Pro, old frozen"),
                        ("llama_pro", "LLaMA Pro, trained whole")):  # fmt: skip
        row = freeze[name]
        lines.append(f"| {label} | {_mean(row['prose'])} {ci(row['prose']) if row['prose']['n'] > 1 else ''} | "
                     f"{_mean(row['code'])} {ci(row['code']) if row['code']['n'] > 1 else ''} |")  # fmt: skip
    lines.append(
        f"| frozen minus whole | {_mean(freeze['frozen_minus_whole_prose'], sign=True)} "
        f"{ci(freeze['frozen_minus_whole_prose'])} | {_mean(freeze['frozen_minus_whole_code'], sign=True)} "
        f"{ci(freeze['frozen_minus_whole_code'])} |"
    )
    said = verdicts(r)
    lines += ["", "**Verdict.** " + "; ".join(said[k] for k in ("recipe", "probe", "scratch", "freeze")) + "."]
    if r.get("wall_seconds"):
        lines.append(f"The whole measurement took {r['wall_seconds'] / 60:.0f} minutes.")
    return "\n".join(lines)
