"""Benchmark: upcycling a dense model into a mixture of experts on two cores, through the pipeline
users run (lagdsl pretrains and exports a dense base; every later run imports it).

1. **A base.** `lagdsl run` pretrains a dense `gpt` (a Llama: grouped-query attention, untied head)
   on code (the standard library's source without its docstrings); `lagdsl export` writes it as a
   Llama folder, which every later run reads with `model pretrained(...)`.
2. **The recipes**, each turning every MLP into 8 experts, 2 per token (`lagdsl study`: each from the
   same imported model on the same batches, `heal` steps, `seeds` seeds of data order and draws):
   plain copies with a random router, copies with a zero router, copies with noise, and
   Drop-Upcycling (half of each expert's hidden units drawn again). The study reports, per lag,
   how well the val loss at the lag ranks the recipes' final val loss (Spearman's rho) and the
   regret of picking by it; each recipe's final val loss with a 95% interval over seeds.
3. **Granular upcycling** (`granularity=2`, 8 experts of half the size, 4 per token: the same active
   FLOPs as copies top-2, half the experts' parameters) is another mixture, which a probe does not
   compare with these (E0406): trained apart with `lagdsl run`, the same seeds.
4. **The dense model trained on at equal active FLOPs**: the base, not grown, trained as many steps
   as give the FLOPs of the mixtures' heal (a mixture's step costs more: two experts and a router).
5. **The expert load** at the end of the best recipe's run (seed 1): each block's share per expert.

Writes `bench/upcycle_evidence.json`; `--update-docs` puts the tables in docs/benchmarks.md
(`bench:upcycle_evidence`). The work folder (`bench/out/upcycle_evidence`) keeps every run.

    python bench/upcycle_evidence.py [--size cpu|toy] [--reuse] [--update-docs]
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
    # two cores: about 20 minutes
    "cpu": {
        "width": 128, "heads": 4, "kv_heads": 2, "depth": 4, "context": 128, "batch": 8,
        "base_steps": 800, "base_lr": 3e-3, "heal": 300, "heal_lr": 1e-3, "probe": 10, "lags": [0, 2, 5, 10, 25],
        "eval_batches": 8, "eval_every": 25, "seeds": 5, "experts": 8, "top_k": 2,
        "prose_bytes": 1, "code_bytes": 6_000_000, "device": "cpu", "precision": "fp32",
    },
    # one H100/H200, by estimate (no GPU has run it yet): a base of width 512, 8 layers, context 512,
    # 16 rows a step, pretrained 1,500 steps; 8 experts (about 110M parameters, 40M active), 300
    # steps on, three seeds: a few minutes
    "gpu": {
        "width": 512, "heads": 8, "kv_heads": 4, "depth": 8, "context": 512, "batch": 16,
        "base_steps": 1500, "base_lr": 1e-3, "heal": 300, "heal_lr": 3e-4, "probe": 10, "lags": [0, 2, 5, 10, 25],
        "eval_batches": 8, "eval_every": 25, "seeds": 3, "experts": 8, "top_k": 2,
        "prose_bytes": 1, "code_bytes": 20_000_000, "device": "cuda", "precision": "bf16",
    },
    # the script itself, in seconds
    "toy": {
        "width": 16, "heads": 2, "kv_heads": 1, "depth": 2, "context": 16, "batch": 4,
        "base_steps": 20, "base_lr": 3e-3, "heal": 12, "heal_lr": 1e-3, "probe": 2, "lags": [0, 2, 5],
        "eval_batches": 2, "eval_every": 4, "seeds": 2, "experts": 4, "top_k": 2,
        "prose_bytes": 1, "code_bytes": 200_000, "device": "cpu", "precision": "fp32",
    },
}  # fmt: skip

#: the recipes a probe compares (one mixture: E experts, top-k), by the label the study gives them
RECIPES = {
    "copies": "upcycle(top_k={k})",
    "copies, zero router": "upcycle(top_k={k}, router=zero)",
    "copies with noise": "upcycle(top_k={k}, noise=0.05)",
    "Drop-Upcycling": "upcycle(top_k={k}, drop=0.5)",
}
GRANULAR = "upcycle(granularity=2, top_k={k2})"


def schedules(size: dict[str, Any], dense_steps: int) -> dict[str, str]:
    e, k, heal = size["experts"], size["top_k"], size["heal"]
    base_model = (
        f"model gpt(context={size['context']}, width={size['width']}, heads={size['heads']}, "
        f"kv_heads={size['kv_heads']}, depth={size['depth']}, tie=false)"
    )
    imported = f'model pretrained("base", context={size["context"]})'
    candidates = ", ".join(op.format(k=k) for op in RECIPES.values())

    def healed(name: str, growth: str, steps: int = heal) -> str:
        return (
            _head(size, name, imported, "code", size["heal_lr"]) + f"stage up {{\n{growth}  train {steps} steps\n}}\n"
        )

    return {
        "base.grow": _head(size, "base", base_model, "code", size["base_lr"])
        + f"stage base {{ train {size['base_steps']} steps }}\n",
        "upcycle.grow": healed(
            "upcycle", f"  grow experts to {e} {{ candidates [{candidates}] probe {size['probe']} steps }}\n"
        ),
        "granular.grow": healed("granular", f"  grow experts to {e} with {GRANULAR.format(k2=2 * k)}\n"),
        "dense.grow": healed("dense", "", dense_steps),
    }  # fmt: skip


def run(size: dict[str, Any], work: Path, say: Any = print) -> dict[str, Any]:
    """Everything of the module's docstring, at `size`, under `work`: measured, then analysed."""
    return measured(measure, analyse, size, work, say)


def measure(size: dict[str, Any], work: Path, say: Any = print) -> None:
    work.mkdir(parents=True, exist_ok=True)
    corpora = _corpora(work, size["prose_bytes"], size["code_bytes"])
    for name, text in schedules(size, size["heal"]).items():  # the dense run's length is set below
        (work / name).write_text(text)
    say(f"{corpora['code']:,} bytes of code; pretraining the base")
    lagdsl(work, "run", "base.grow", "--out", "base-run", "--quiet")
    lagdsl(work, "export", "base-run", "-o", "base", "--force")
    dense_steps = round(size["heal"] * step_flops(work, "upcycle.grow") / step_flops(work, "dense.grow"))
    for name, text in schedules(size, dense_steps).items():
        (work / name).write_text(text)
    lags, seeds = ",".join(str(lag) for lag in size["lags"]), str(size["seeds"])
    say("the recipes' study")
    lagdsl(work, "study", "upcycle.grow", "--stage", "up", "--lags", lags, "--seeds", seeds, "--seed", "1",
           "-o", "study", "--quiet")  # fmt: skip
    say(f"granular, and the dense model on at equal active FLOPs ({dense_steps} steps)")
    for name in ("granular", "dense"):
        for seed in range(1, size["seeds"] + 1):
            lagdsl(work, "run", f"{name}.grow", "--out", f"{name}-{seed}", "--seed", str(seed), "--quiet")
    best = _best(work)  # the study's label: the operator as written
    text = (work / "granular.grow").read_text().replace(GRANULAR.format(k2=2 * size["top_k"]), best)
    (work / "best.grow").write_text(text)
    lagdsl(work, "run", "best.grow", "--out", "best-1", "--seed", "1", "--quiet")


def _best(work: Path) -> str:
    from lagdsl.artifacts import Study, read_json

    study = read_json(work / "study" / "study.json", Study)
    finals = final_losses(study)
    return min(finals, key=lambda label: finals[label]["mean"])


def names(top_k: int) -> dict[str, str]:
    """Each recipe's name by the study's label of it (its operator as written)."""
    return {op.format(k=top_k): name for name, op in RECIPES.items()}


def analyse(size: dict[str, Any], work: Path) -> dict[str, Any]:
    from lagdsl.artifacts import Study, read_json
    from lagdsl.runtime.records.metrics import read

    study = read_json(work / "study" / "study.json", Study)
    seeds = range(1, size["seeds"] + 1)
    finals = final_losses(study)
    best = min(finals, key=lambda label: finals[label]["mean"])
    apart = {}
    for name in ("granular", "dense"):
        values = [curve(work / f"{name}-{seed}")["val"][-1] for seed in seeds]
        apart[name] = {**mean_interval(values), "seeds": values}
    best_finals = finals[best]["seeds"]
    base = json.loads((work / "base-run" / "summary.json").read_text())
    loads = [r["expert_load"] for r in read(work / "best-1" / "metrics.jsonl") if r.get("expert_load")]
    return {
        "size": size,
        "base": {"steps": base["steps"], "final_val": curve(work / "base-run")["val"][-1]},
        "horizon_steps": study.horizon_steps,
        "names": names(size["top_k"]),
        "study": [{**row, "picks": picks(study, i)} for i, row in enumerate(lag_rows(study))],
        "final_val": finals,
        "best": best,
        "granular": apart["granular"],
        "dense": {**apart["dense"], "steps": json.loads((work / "dense-1" / "summary.json").read_text())["steps"]},
        "best_minus_dense": difference_interval(best_finals, apart["dense"]["seeds"]),
        "granular_minus_dense": difference_interval(apart["granular"]["seeds"], apart["dense"]["seeds"]),
        "expert_load": loads[-1] if loads else None,
        "seconds": float((work / "seconds.txt").read_text()) if (work / "seconds.txt").exists() else None,
    }


def markdown(r: dict[str, Any]) -> str:
    size, seeds = r["size"], r["size"]["seeds"]
    e, k = size["experts"], size["top_k"]
    lines = [
        f"A dense base (width {size['width']}, {size['depth']} layers, {size['heads']} heads, {size['kv_heads']} "
        f"key-value heads, untied head, context {size['context']}, bytes) pretrained {r['base']['steps']} steps on "
        f"code (val loss {r['base']['final_val']:.3f}), exported to a Llama folder and imported; each recipe makes "
        f"every MLP {e} experts, top-{k}, and trains {r['horizon_steps']} steps on; {seeds} seeds.",
        "",
        "**Which recipe ends best** (val loss: at growth, and at the end, mean and 95% interval over seeds; minus "
        "the best: seed by seed, the recipes of a seed sharing its batches):",
        "",
        "| recipe | operator | val at growth | final val | 95% CI | minus the best [95% CI] | wins |",
        "|---|---|---:|---:|---|---|---:|",
    ]
    for label, f in sorted(r["final_val"].items(), key=lambda item: item[1]["mean"]):
        lead = f["minus_best"]
        behind = "(the best)" if lead["mean"] == 0 and lead["high"] == 0 else f"{lead['mean']:+.4f} {ci(lead, 4)}"
        lines.append(f"| {r['names'][label]} | `{label}` | {f['at_lag']['0']:.3f} | {f['mean']:.3f} | {ci(f)} | "
                     f"{behind} | {f['wins']}/{seeds} |")  # fmt: skip
    g, d = r["granular"], r["dense"]
    lines += [
        f"| granular, trained apart | `{GRANULAR.format(k2=2 * k)}` | | {g['mean']:.3f} | {ci(g)} | | |",
        f"| dense, trained on at equal active FLOPs ({d['steps']} steps) | none | | {d['mean']:.3f} | {ci(d)} | | |",
        "",
        f"Best recipe minus dense: {r['best_minus_dense']['mean']:+.4f} {ci(r['best_minus_dense'], 4)}; granular "
        f"minus dense: {r['granular_minus_dense']['mean']:+.4f} {ci(r['granular_minus_dense'], 4)} (negative: the "
        "mixture ends lower at the same active FLOPs; it holds more parameters).",
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
    if r["expert_load"]:
        shares = [max(layer) * len(layer) for layer in r["expert_load"]]
        lines += ["", f"Expert load at the end of {r['names'][r['best']]} (seed 1): the busiest expert of each block "
                  f"takes {', '.join(f'{s:.2f}' for s in shares)} x its share under perfect balance."]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    evidence_main("upcycle_evidence", __doc__, SIZES, run, analyse, markdown)


if __name__ == "__main__":
    main()
