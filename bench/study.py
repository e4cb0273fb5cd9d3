"""Benchmark: the lag-correlation study on `bench/grow.grow`'s last growth (stage `final`, depth
4 -> 8, three candidates), over several seeds.

Runs `lagdsl study` (candidates trained from the same snapshot to the end of the stage), then writes
`bench/study.json` (the statistics per lag, means and spreads over seeds, and each seed's picks) and
a markdown table; `--update-docs` puts the table in docs/benchmarks.md between the `bench:study` markers.
The full study (every candidate's curve) stays in `bench/out/study/`.

Targets: the schedule's pick (lowest training loss after its 10-step probe) ends within 1% of the
best candidate's final val loss in every seed; rho at lag 0 is reported next to rho at that lag.

    python bench/study.py [--seeds 3] [--reuse] [--update-docs]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

sys.path.insert(0, str(ROOT))

from common import cores, publish  # noqa: E402

from lagdsl.analysis.study import recompute  # noqa: E402
from lagdsl.artifacts import Study, read_json  # noqa: E402

OUT = ROOT / "bench" / "out" / "study"
LAGS = "0,2,5,10,25,50,100"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--reuse", action="store_true", help="analyse bench/out/study/study.json again (statistics recomputed)"
    )
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    if not (args.reuse and (OUT / "study.json").exists()):
        cmd = [sys.executable, "-m", "lagdsl", "study", str(ROOT / "bench" / "grow.grow"), "--stage", "final",
               "--lags", LAGS, "--seeds", str(args.seeds), "--seed", "1", "-o", str(OUT)]  # fmt: skip
        subprocess.run(cmd, check=True, cwd=ROOT)
    study = recompute(read_json(OUT / "study.json", Study))
    chosen = study.chosen_lag
    summary = study.summary.model_dump()
    by_lag = {row["lag"]: row for row in summary["val"]}
    by_lag_train = {row["lag"]: row for row in summary["train"]}
    rule = summary["rule"]
    result = {
        "machine": f"{platform.machine()}, {cores()} cores",
        "schedule": "bench/grow.grow",
        "stage": study.stage,
        "candidates": study.candidates,
        "seeds": study.seeds,
        "horizon_steps": study.horizon_steps,
        "chosen_lag": chosen,
        "val": summary["val"],
        "score": summary["score"],
        "train": summary["train"],
        "rule": rule,
        "per_seed": [
            {
                "seed": run.seed,
                "best": run.best,
                "rule_pick": run.rule.pick,
                "rule_relative_regret": run.rule.relative_regret,
                "final_val": {c.label: c.final_val for c in run.candidates},
                "val_at_lag_0": {c.label: c.val[0] for c in run.candidates},
            }
            for run in study.runs
        ],
        "rho_val_at_0": by_lag[0]["spearman"],
        "rho_val_at_chosen": by_lag[chosen]["spearman"],
        "rho_train_at_chosen": by_lag_train[chosen]["spearman"],
        "rho_score_at_chosen": {row["lag"]: row for row in summary["score"]}[chosen]["spearman"],
        "target_met": rule["picks_within_1pct"] == f"{len(study.seeds)}/{len(study.seeds)}",
    }
    publish("study", result, markdown(result), args.update_docs)


def _show(d: dict[str, object], digits: int = 3) -> str:
    if not d["n"]:
        return "n/a"
    return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"


def markdown(r: dict[str, object]) -> str:
    seeds = len(r["seeds"])
    lines = [
        f"Machine: {r['machine']}; `bench/grow.grow`, growth of `{r['stage']}` (depth 4 -> 8), candidates "
        f"{', '.join(r['candidates'])}, trained {r['horizon_steps']} steps to the end of the stage; {seeds} seeds, "
        "mean ± sample standard deviation. rho: Spearman, tau: Kendall's tau-b, between the loss at the lag and "
        "the final val loss; regret: final val loss of the pick minus the best (nats).",
        "",
        "| lag | rho (val) | tau (val) | regret (val) | rho (score) | regret (score) | rho (train) | regret (train) "
        "| val pick <= 1% |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for val, score, train in zip(r["val"], r["score"], r["train"], strict=True):
        lag = f"{val['lag']}" + (" (schedule)" if val["lag"] == r["chosen_lag"] else "")
        lines.append(
            f"| {lag} | {_show(val['spearman'])} | {_show(val['kendall'])} | {_show(val['regret'], 4)} | "
            f"{_show(score['spearman'])} | {_show(score['regret'], 4)} | "
            f"{_show(train['spearman'])} | {_show(train['regret'], 4)} | {val['picks_within_1pct']} |"
        )
    rule = r["rule"]
    picks = ", ".join(f"seed {s['seed']}: {s['rule_pick']} (best {s['best']})" for s in r["per_seed"])
    lines += [
        "",
        f"The schedule's rule (lowest training loss over the last 3 of {r['chosen_lag']} probe steps) picked: "
        f"{picks}; regret {_show(rule['regret'], 4)} nats, within 1% of the best final val loss in "
        f"{rule['picks_within_1pct']} seeds (target: every seed): **{'met' if r['target_met'] else 'not met'}**.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
