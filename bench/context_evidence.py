"""Benchmark: growing the context on two cores, through the pipeline users run (lagdsl pretrains
and exports a base; every later run imports it).

1. **A base.** `lagdsl run` pretrains a `gpt` (a Llama: grouped-query attention, untied head) at a
   short context on code (the standard library's source without its docstrings, as bytes);
   `lagdsl export` writes it as a Llama folder, which every later run reads.
2. **The methods**, each growing the context 4x (`lagdsl study`: each from the same imported model
   on the same batches, `heal` steps at the long context, `seeds` seeds of data order): `keep`
   (the same positions), a 10x base (`theta`), position interpolation (`pi`), NTK-aware scaling
   (`ntk`), YaRN and Llama 3.1's scaling. The study reports, per lag, how well the val loss at the
   lag (at the long context) ranks the methods' final val loss (Spearman's rho) and the regret of
   picking by it; each method's final val loss with a 95% interval over seeds.
3. **Trained long from the start**: a model of the same shape trained at the long context from
   scratch for the FLOPs of the base and its heal together, the same seeds.

Not measured here: the loss at the short context after the growth, and passkey retrieval, which a
byte-level model this small and this briefly trained does not learn at any length.

Writes `bench/context_evidence.json`; `--update-docs` puts the tables in docs/benchmarks.md
(`bench:context_evidence`). The work folder (`bench/out/context_evidence`) keeps every run.

    python bench/context_evidence.py [--size cpu|toy] [--reuse] [--update-docs]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT, ROOT / "bench"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from common import evidence_main, lag_cells, lag_rows, measured  # noqa: E402
from upscaling import (  # noqa: E402
    _head,
    ci,
    curve,
    difference_interval,
    final_losses,
    lagdsl,
    mean_interval,
    picks,
    step_flops,
)
from upscaling import write_corpora as _corpora  # noqa: E402

SIZES: dict[str, dict[str, Any]] = {
    # two cores: about ten minutes
    "cpu": {
        "width": 96, "heads": 4, "kv_heads": 2, "depth": 3, "context": 64, "long": 256, "batch": 8,
        "base_steps": 600, "base_lr": 3e-3, "heal": 150, "heal_lr": 1e-3, "probe": 10, "lags": [0, 2, 5, 10, 25],
        "eval_batches": 8, "eval_every": 25, "seeds": 5, "code_bytes": 6_000_000, "device": "cpu",
        "precision": "fp32",
    },
    # one H100/H200, by estimate (no GPU has run it yet): width 512, 8 layers, 512 -> 2,048 positions
    "gpu": {
        "width": 512, "heads": 8, "kv_heads": 4, "depth": 8, "context": 512, "long": 2048, "batch": 16,
        "base_steps": 1500, "base_lr": 1e-3, "heal": 300, "heal_lr": 3e-4, "probe": 10, "lags": [0, 2, 5, 10, 25],
        "eval_batches": 8, "eval_every": 25, "seeds": 3, "code_bytes": 20_000_000, "device": "cuda",
        "precision": "bf16",
    },
    # the script itself, in seconds
    "toy": {
        "width": 16, "heads": 2, "kv_heads": 1, "depth": 2, "context": 16, "long": 64, "batch": 4,
        "base_steps": 20, "base_lr": 3e-3, "heal": 12, "heal_lr": 1e-3, "probe": 2, "lags": [0, 2, 5],
        "eval_batches": 2, "eval_every": 4, "seeds": 2, "code_bytes": 200_000, "device": "cpu",
        "precision": "fp32",
    },
}  # fmt: skip

#: the methods a probe compares, by the label the study gives them
METHODS = {
    "keep": "keep",
    "a 10x base": "theta(base=100000)",
    "position interpolation": "pi",
    "NTK-aware": "ntk",
    "YaRN": "yarn",
    "Llama 3.1": "llama3",
}


def schedules(size: dict[str, Any], scratch_steps: int) -> dict[str, str]:
    model = (
        f"width={size['width']}, heads={size['heads']}, kv_heads={size['kv_heads']}, depth={size['depth']}, tie=false"
    )
    imported = f'model pretrained("base", context={size["context"]})'
    candidates = ", ".join(METHODS.values())
    return {
        "base.grow": _head(size, "base", f"model gpt(context={size['context']}, {model})", "code", size["base_lr"])
        + f"stage base {{ train {size['base_steps']} steps }}\n",
        "longer.grow": _head(size, "longer", imported, "code", size["heal_lr"])
        + f"stage up {{\n  grow context to {size['long']} {{ candidates [{candidates}] probe {size['probe']} steps "
        f"select lowest val_loss at positions {size['context']}.. }}\n  train {size['heal']} steps\n}}\n",
        "scratch.grow": _head(size, "scratch", f"model gpt(context={size['long']}, {model})", "code", size["base_lr"])
        + f"stage long {{ train {scratch_steps} steps }}\n",
    }  # fmt: skip


def run(size: dict[str, Any], work: Path, say: Any = print) -> dict[str, Any]:
    """Everything of the module's docstring, at `size`, under `work`: measured, then analysed."""
    return measured(measure, analyse, size, work, say)


def measure(size: dict[str, Any], work: Path, say: Any = print) -> None:
    work.mkdir(parents=True, exist_ok=True)
    corpora = _corpora(work, 1, size["code_bytes"])
    for name, text in schedules(size, 1000).items():  # (the scratch run's length is set below)
        (work / name).write_text(text)
    say(f"{corpora['code']:,} bytes of code; pretraining the base at context {size['context']}")
    lagdsl(work, "run", "base.grow", "--out", "base-run", "--quiet")
    lagdsl(work, "export", "base-run", "-o", "base", "--force")
    spent = size["base_steps"] * step_flops(work, "base.grow") + size["heal"] * step_flops(work, "longer.grow")
    scratch = round(spent / step_flops(work, "scratch.grow"))
    (work / "scratch.grow").write_text(schedules(size, scratch)["scratch.grow"])
    lags, seeds = ",".join(str(lag) for lag in size["lags"]), str(size["seeds"])
    say(f"the methods' study ({size['context']} -> {size['long']})")
    lagdsl(work, "study", "longer.grow", "--stage", "up", "--lags", lags, "--seeds", seeds, "--seed", "1",
           "-o", "study", "--quiet")  # fmt: skip
    say(f"trained at {size['long']} from the start, the same FLOPs ({scratch} steps)")
    for seed in range(1, size["seeds"] + 1):
        lagdsl(work, "run", "scratch.grow", "--out", f"scratch-{seed}", "--seed", str(seed), "--quiet")


def analyse(size: dict[str, Any], work: Path) -> dict[str, Any]:
    from lagdsl.artifacts import Study, read_json

    study = read_json(work / "study" / "study.json", Study)
    finals = final_losses(study)
    best = min(finals, key=lambda label: finals[label]["mean"])
    scratch = [curve(work / f"scratch-{seed}")["val"][-1] for seed in range(1, size["seeds"] + 1)]
    base = json.loads((work / "base-run" / "summary.json").read_text())
    return {
        "size": size,
        "base": {"steps": base["steps"], "final_val": curve(work / "base-run")["val"][-1]},
        "horizon_steps": study.horizon_steps,
        "names": {op: name for name, op in METHODS.items()},
        "study": [{**row, "picks": picks(study, i)} for i, row in enumerate(lag_rows(study))],
        "final_val": finals,
        "best": best,
        "scratch": {**mean_interval(scratch), "seeds": scratch,
                    "steps": json.loads((work / "scratch-1" / "summary.json").read_text())["steps"]},
        "best_minus_scratch": difference_interval(finals[best]["seeds"], scratch),
        "seconds": float((work / "seconds.txt").read_text()) if (work / "seconds.txt").exists() else None,
    }  # fmt: skip


def markdown(r: dict[str, Any]) -> str:
    size, seeds = r["size"], r["size"]["seeds"]
    lines = [
        f"A base (width {size['width']}, {size['depth']} layers, {size['heads']} heads, {size['kv_heads']} key-value "
        f"heads, untied head, bytes) pretrained {r['base']['steps']} steps at context {size['context']} on code "
        f"(val loss {r['base']['final_val']:.3f}), exported to a Llama folder and imported; each method grows the "
        f"context to {size['long']} and trains {r['horizon_steps']} steps on; {seeds} seeds; val loss at "
        f"{size['long']} over every position.",
        "",
        "| method | operator | val at growth | final val | 95% CI | minus the best [95% CI] | wins |",
        "|---|---|---:|---:|---|---|---:|",
    ]
    for label, f in sorted(r["final_val"].items(), key=lambda item: item[1]["mean"]):
        lead = f["minus_best"]
        behind = "(the best)" if lead["mean"] == 0 and lead["high"] == 0 else f"{lead['mean']:+.4f} {ci(lead, 4)}"
        lines.append(f"| {r['names'].get(label, label)} | `{label}` | {f['at_lag']['0']:.3f} | {f['mean']:.3f} | "
                     f"{ci(f)} | {behind} | {f['wins']}/{seeds} |")  # fmt: skip
    s = r["scratch"]
    lines += [
        f"| trained at {size['long']} from the start, equal FLOPs ({s['steps']} steps) | none | | {s['mean']:.3f} | "
        f"{ci(s)} | | |",
        "",
        f"Best method minus trained long from the start: {r['best_minus_scratch']['mean']:+.4f} "
        f"{ci(r['best_minus_scratch'], 4)} (negative: growing ends lower at the same FLOPs).",
        "",
        "**Can a short probe tell?** rho: Spearman between the val loss at the lag and the final val loss (mean ± sd "
        "over seeds, 95% bootstrap interval); p: sign-flip test of rho at the lag > rho at lag 0; regret: the final "
        "val loss of the pick minus the best's.",
        "",
        "| lag (steps) | rho | rho 95% CI | rho - rho(lag 0) [95% CI] | p | regret | regret 95% CI | picks (seeds) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in r["study"]:
        chosen = ", ".join(f"{r['names'].get(label, label)} {n}" for label, n in row["picks"].items())
        lines.append("| " + " | ".join([str(row["lag"]), *lag_cells(row), chosen]) + " |")
    return "\n".join(lines)


def main() -> None:
    evidence_main("context_evidence", __doc__, SIZES, run, analyse, markdown)


if __name__ == "__main__":
    main()
