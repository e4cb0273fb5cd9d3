"""Benchmark: does the loss after a small lag rank growth operators by their final loss better than
the loss right after growth (LAG's claim), at the scale this machine reaches?

`bench/lag_evidence.grow`'s last growth (depth 4 -> 6) has ten candidates: every depth operator
that can add 2 layers to 4, with and without `noise=0.01`. `lagdsl study` trains each from the same
snapshot to the end of the run (horizon `end`, 180 steps) for `--seeds` seeds and records the val
loss at lags 0, 2, 5, 10 and 18 (10% of the horizon). Per lag: Spearman's rho between the val loss
at the lag and the final val loss, and the regret of picking by it, as means over seeds with 95%
bootstrap intervals (seeds and candidates resampled), and the one-sided exact sign-flip test of
"rho at this lag > rho at lag 0" over seeds.

Writes `bench/lag_evidence.json`; `--update-docs` puts the table and the verdict in
docs/benchmarks.md (`bench:lag_evidence`). Nothing else may run meanwhile (two cores; about 30
minutes with 5 seeds).

    python bench/lag_evidence.py [--seeds 5] [--reuse] [--update-docs]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from common import cores, lag_cells, lag_rows, publish  # noqa: E402

from lagdsl.analysis.study import recompute  # noqa: E402
from lagdsl.artifacts import Study, read_json  # noqa: E402

OUT = ROOT / "bench" / "out" / "lag_evidence"
LAGS = "0,2,5,10,18"
SIGNIFICANCE = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="analyse the last study again")
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    seconds = None
    if not (args.reuse and (OUT / "study.json").exists()):
        started = time.perf_counter()
        cmd = [sys.executable, "-m", "lagdsl", "study", str(ROOT / "bench" / "lag_evidence.grow"),
               "--stage", "final", "--lags", LAGS, "--seeds", str(args.seeds), "--seed", "1", "--horizon", "end",
               "-o", str(OUT)]  # fmt: skip
        subprocess.run(cmd, check=True, cwd=ROOT)
        seconds = round(time.perf_counter() - started)
    study = recompute(read_json(OUT / "study.json", Study))
    result = summarize(study, seconds)
    publish("lag_evidence", result, markdown(result), args.update_docs)


def summarize(study: Study, seconds: int | None) -> dict[str, Any]:
    rows = lag_rows(study)
    chosen = next(r for r in rows if r["lag"] == study.chosen_lag)
    test = chosen["above_lag0"] or {}
    holds = bool(test.get("p_value") is not None and test["p_value"] < SIGNIFICANCE and (test.get("low") or 0) > 0)
    return {
        "machine": f"{platform.machine()}, {cores()} cores",
        "schedule": "bench/lag_evidence.grow",
        "candidates": study.candidates,
        "seeds": study.seeds,
        "horizon_steps": study.horizon_steps,
        "chosen_lag": study.chosen_lag,
        "rows": rows,
        "final_val": {str(run.seed): {c.label: c.final_val for c in run.candidates} for run in study.runs},
        "best": {str(run.seed): run.best for run in study.runs},
        "rule_pick": {str(run.seed): run.rule.pick for run in study.runs},
        "claim_holds": holds,
        "wall_seconds": seconds,
    }


def markdown(r: dict[str, Any]) -> str:
    seeds = len(r["seeds"])
    lines = [
        f"Machine: {r['machine']}; `{r['schedule']}`, growth depth 4 -> 6, {len(r['candidates'])} candidates "
        f"({', '.join(r['candidates'])}), each trained {r['horizon_steps']} steps to the end of the run; {seeds} "
        "seeds. rho: Spearman between the val loss at the lag and the final val loss (mean ± sd over seeds, and "
        "a 95% bootstrap interval over seeds and candidates); regret: the final val loss of the pick minus the "
        "best (nats); p: one-sided exact sign-flip test over seeds of rho at the lag > rho at lag 0.",
        "",
        "| lag (steps) | rho | rho 95% CI | rho - rho(lag 0) [95% CI] | p | regret | regret 95% CI | pick within 1% |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        lag = f"{row['lag']}" + (" (the schedule's probe)" if row["lag"] == r["chosen_lag"] else "")
        lines.append("| " + " | ".join([lag, *lag_cells(row), row["picks_within_1pct"]]) + " |")
    verdict = (
        "**holds at this scale**: rho after the probe's lag is higher than at the growth, seed by seed "
        f"(p < {SIGNIFICANCE}, interval of the difference above 0)"
        if r["claim_holds"]
        else "**is not shown at this scale**: the difference in rho between the probe's lag and the growth is "
        f"not significant at {SIGNIFICANCE} (or its interval reaches 0); see the table"
    )
    lines += [
        "",
        f"LAG's claim (the loss after a small lag ranks the candidates better than the loss at growth) {verdict}.",
    ]
    if r.get("wall_seconds"):
        lines.append(f"The study took {r['wall_seconds'] / 60:.0f} minutes.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
